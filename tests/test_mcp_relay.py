"""The relay that runs a local MCP server inside the sandbox (``sandbox_relay.py``), run here on
the host by this Python against real stdio servers (newline-delimited JSON-RPC): a job on
stdin, one session, one request, one JSON answer on stdout. In a job the sandbox's python3
runs its source (``python3 -c``), where no coverage reaches; here it runs from its file, the
same code, so that the processes' coverage measures it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bot.executor.agent.mcp import sandbox_relay

FACTS = Path(__file__).parent / "fixtures" / "mcp" / "stdio_server.py"

# A server that asks the client things before it answers: a ping (which must be answered), a
# sampling request (which the relay does not offer), a notification, a line that is not JSON,
# an answer to a request nobody made. It answers ``tools/call`` with what it got back.
CHATTY = r'''
import json, sys

def say(message):
    print(json.dumps(message), flush=True)

replies = {}
for line in sys.stdin:
    msg = json.loads(line)
    if "method" not in msg:
        replies[msg["id"]] = msg
        continue
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        say({"jsonrpc": "2.0", "id": "p1", "method": "ping"})
        say({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}})
        say({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "hi"}})
        print("not json at all", flush=True)
        say([1, 2, 3])
        say({"jsonrpc": "2.0", "id": 99, "result": {"stray": True}})
        say({"jsonrpc": "2.0", "id": msg["id"], "result": {
            "protocolVersion": msg["params"]["protocolVersion"], "capabilities": {}}})
    else:
        say({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [
            {"type": "text", "text": json.dumps(replies, sort_keys=True)}]}})
'''

# A server whose answers are built from the call's arguments: ``blocks`` as given, or
# ``tools`` tools with long descriptions.
ECHO = r'''
import json, sys

for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        result = {"protocolVersion": "x", "capabilities": {}}
    elif msg["method"] == "tools/list":
        result = {"tools": [{"name": f"tool{i}", "description": "d" * 1000,
                             "inputSchema": {"type": "object"}} for i in range(60)]}
    else:
        result = msg["params"]["arguments"]
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
'''


def relay(job: dict[str, Any]) -> dict[str, Any]:
    """What the relay prints for ``job``."""
    done = subprocess.run([sys.executable, sandbox_relay.__file__], capture_output=True,
                          input=json.dumps(job).encode(), timeout=60, check=True)
    return dict(json.loads(done.stdout))


def job(argv: list[str], method: str = "tools/list", params: dict[str, Any] | None = None,
        **more: Any) -> dict[str, Any]:
    return {"argv": argv, "env": {}, "protocol": "2025-06-18", "method": method,
            "params": params or {}, "seconds": 20, "cap": 12_000, **more}


def server(tmp_path: Path, source: str) -> list[str]:
    path = tmp_path / "server.py"
    path.write_text(source)
    return [sys.executable, str(path)]


def test_a_tool_is_listed_and_called_through_one_session_each() -> None:
    tools = relay(job([sys.executable, str(FACTS)]))
    assert [t["name"] for t in tools["result"]["tools"]][:2] == ["lookup", "big"]
    fact = relay(job([sys.executable, str(FACTS)], "tools/call",
                                 {"name": "lookup", "arguments": {"key": "port"}}))
    assert fact == {"result": {"content": [
        {"type": "text", "text": "The service listens on port 8042."}]}}
    failed = relay(job([sys.executable, str(FACTS)], "tools/call",
                                   {"name": "fail"}))
    assert failed["result"]["isError"] is True  # a tool's error is a result, passed on


def test_the_servers_env_is_added_to_the_sandboxs() -> None:
    who = relay(job([sys.executable, str(FACTS)], "tools/call",
                                {"name": "whoami"}, env={"FACTS_MODE": "strict"}))
    assert who["result"]["content"][0]["text"].endswith("mode=strict")


def test_a_json_rpc_error_is_passed_on_as_the_servers() -> None:
    answer = relay(job([sys.executable, str(FACTS)], "resources/list"))
    assert answer == {"error": {"code": -32601, "message": "no such method"}}


def test_a_refused_session_is_the_servers_error(tmp_path: Path) -> None:
    refuses = server(tmp_path, "import json, sys\nmsg = json.loads(sys.stdin.readline())\n"
                     "print(json.dumps({'jsonrpc': '2.0', 'id': msg['id'], 'error': "
                     "{'code': -32602, 'message': 'unsupported protocol'}}), flush=True)\n")
    assert relay(job(refuses)) == {
        "error": {"code": -32602, "message": "unsupported protocol"}}


def test_pings_are_answered_requests_refused_and_noise_skipped(tmp_path: Path) -> None:
    answer = relay(job(server(tmp_path, CHATTY), "tools/call", {"name": "any"}))
    replies = json.loads(answer["result"]["content"][0]["text"])
    assert replies == {
        "p1": {"jsonrpc": "2.0", "id": "p1", "result": {}},
        "s1": {"jsonrpc": "2.0", "id": "s1",
               "error": {"code": -32601, "message": "not supported"}}}


def test_long_text_is_cut_to_the_cap_across_blocks_and_media_kept_as_their_size(
        tmp_path: Path) -> None:
    link = {"type": "resource_link", "uri": "file:///notes.md", "name": "notes"}
    blocks = [{"type": "text", "text": "a" * 60}, "not a block", link,
              {"type": "image", "mimeType": "image/png", "data": "QUJD" * 10},
              {"type": "text", "text": "b" * 60}, {"type": "audio", "data": "xyz"},
              {"type": "text", "text": "never shown"}]
    answer = relay(job(server(tmp_path, ECHO), "tools/call",
                                   {"name": "echo", "arguments": {"content": blocks,
                                                                  "isError": False}},
                                   cap=100))
    assert answer["result"] == {"isError": False, "content": [
        {"type": "text", "text": "a" * 60}, link,
        {"type": "image", "mimeType": "image/png", "size": 40},
        {"type": "text", "text": "b" * 40 + "\n[... 20 characters cut]"},
        {"type": "audio", "mimeType": "", "size": 3}]}
    plain = relay(job(server(tmp_path, ECHO), "tools/call",
                                  {"name": "echo", "arguments": {"structured": [1]}}))
    assert plain == {"result": {"structured": [1]}}  # no content list: as it came


def test_a_long_tool_list_is_cut_from_its_end_and_says_how_many(tmp_path: Path) -> None:
    listed = relay(job(server(tmp_path, ECHO)))["result"]
    kept = len(listed["tools"])
    assert kept + listed["cut"] == 60 and 30 < kept < 60
    assert listed["tools"][-1]["name"] == f"tool{kept - 1}"
    assert len(json.dumps(listed["tools"])) <= sandbox_relay.LIST_LIMIT
    assert sandbox_relay.listed({"tools": [{"name": "a"}]}, 100) == {"tools": [{"name": "a"}]}


def test_a_program_that_does_not_exist_is_said_so() -> None:
    answer = relay(job(["no-such-mcp-server"]))
    assert answer == {"failed": "could not start no-such-mcp-server: No such file or directory"}


def test_a_server_that_dies_is_said_so_with_what_it_wrote(tmp_path: Path) -> None:
    dies = server(tmp_path, "import sys\nsys.stdin.readline()\n"
                  "sys.stderr.write('x' * 3000 + 'missing config')\nsys.exit(3)\n")
    answer = relay(job(dies))
    assert answer["failed"] == "the server ended (exit code 3) before it answered"
    assert answer["stderr"].endswith("missing config")
    assert len(answer["stderr"]) == sandbox_relay.STDERR_TAIL


def test_a_server_that_never_answers_is_stopped_at_its_deadline(tmp_path: Path) -> None:
    silent = server(tmp_path, "import sys, time\nsys.stdin.readline()\ntime.sleep(60)\n")
    started = time.monotonic()
    answer = relay(job(silent, seconds=1))
    assert answer == {"failed": "no answer within 1s"}
    assert time.monotonic() - started < 5  # killed, not waited for
