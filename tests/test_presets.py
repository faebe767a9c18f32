"""The agent CLI presets' parts: the scripted model's streamed wire formats as the CLIs read
them, what each preset reads of a CLI's session, the session read back from a sandbox whole,
and how a repository picks a preset and its image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_agent import backend

from bot.config import Settings
from bot.executor.agent.cli import CHUNK, read_back
from bot.executor.agent.presets import PRESETS, image_for, preset_for
from bot.executor.repo_config import RepoConfigError, parse_repo_config
from bot.server import running
from devkit.scripted import ScriptedModel

KEY = "sk-scripted-test"
TURNS: list[dict[str, Any]] = [
    {"text": "Looking at calc.py first, then the tests.",
     "tool": "shell", "args": {"cmd": "grep -n 'return' calc.py"},
     "usage": {"input": 1500, "output": 30}},
    {"text": "Done.", "usage": {"input": 1600, "output": 5}},
]


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    """(event name, data) of a server-sent event stream."""
    out: list[tuple[str | None, Any]] = []
    for block in text.strip().split("\n\n"):
        name, data = None, ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
        out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out


async def ask(path: str, body: dict[str, Any], headers: dict[str, str],
              turns: list[dict[str, Any]] = TURNS) -> httpx.Response:
    model = ScriptedModel(turns, api_key=KEY)
    async with running(model.app) as url, httpx.AsyncClient() as client:
        return await client.post(f"{url}{path}", json=body, headers=headers)


async def test_anthropic_stream_rebuilds_the_message_with_its_usage() -> None:
    resp = await ask("/v1/messages?beta=true", {"model": "claude-x", "stream": True,
                                                "messages": [{"role": "user", "content": "hi"}]},
                     {"x-api-key": KEY})
    assert resp.status_code == 200 and resp.headers["request-id"].startswith("req_")
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert all(n == d["type"] for n, d in events)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta"
                   and d["delta"]["type"] == "text_delta")
    args = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"
                   and d["delta"]["type"] == "input_json_delta")
    assert text == TURNS[0]["text"] and json.loads(args) == TURNS[0]["args"]
    assert events[0][1]["message"]["usage"]["input_tokens"] == 1500
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == 30


async def test_anthropic_errors_have_anthropic_s_shape() -> None:
    resp = await ask("/v1/messages", {"model": "m", "messages": []}, {"x-api-key": "wrong"})
    assert resp.status_code == 401
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "authentication_error"
    limited = await ask("/v1/messages", {"model": "m", "messages": []}, {"x-api-key": KEY},
                        [{"status": 529}])
    assert limited.status_code == 529 and limited.json()["error"]["type"] == "overloaded_error"


async def test_responses_stream_ends_with_the_whole_response_and_usage() -> None:
    body = {"model": "gpt-x", "stream": True, "instructions": "be brief",
            "tools": [{"type": "function", "name": "shell", "parameters": {}}],
            "input": [{"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": "fix it"}]}]}
    resp = await ask("/v1/responses", body, {"authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200 and resp.headers["x-request-id"]
    events = sse_events(resp.text)
    kinds = [d["type"] for _, d in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    done = events[-1][1]["response"]
    assert done["usage"] == {"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 0},
                             "output_tokens": 30, "output_tokens_details":
                                 {"reasoning_tokens": 0}, "total_tokens": 1530}
    call = next(i for i in done["output"] if i["type"] == "function_call")
    streamed = "".join(d["delta"] for _, d in events
                       if d["type"] == "response.function_call_arguments.delta")
    assert json.loads(streamed) == json.loads(call["arguments"]) == TURNS[0]["args"]
    assert "".join(d["delta"] for _, d in events
                   if d["type"] == "response.output_text.delta") == TURNS[0]["text"]


async def test_responses_custom_tool_and_whole_answer() -> None:
    body = {"model": "gpt-x", "input": "patch it",
            "tools": [{"type": "custom", "name": "apply_patch"}]}
    turn = [{"tool": "apply_patch", "args": {"input": "*** Begin Patch\n*** End Patch"}}]
    resp = await ask("/responses", body, {"authorization": f"Bearer {KEY}"}, turn)
    item = resp.json()["output"][-1]
    assert item["type"] == "custom_tool_call" and item["input"].startswith("*** Begin Patch")
    wrong = await ask("/v1/responses", body, {"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


async def test_responses_call_a_namespaced_tool_by_its_own_name() -> None:
    body = {"model": "gpt-x", "input": "look it up", "tools": [
        {"type": "namespace", "name": "mcp__facts", "description": "Tools",
         "tools": [{"type": "function", "name": "lookup", "parameters": {}}]}]}
    turn = [{"tool": "mcp__facts__lookup", "args": {"key": "port"}}]
    resp = await ask("/v1/responses", body, {"authorization": f"Bearer {KEY}"}, turn)
    item = resp.json()["output"][-1]
    assert (item["type"], item["namespace"], item["name"]) == \
        ("function_call", "mcp__facts", "lookup")


async def test_chat_stream_chunks_and_usage_when_asked() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}
    resp = await ask("/v1/chat/completions", body, {"authorization": f"Bearer {KEY}"})
    events = sse_events(resp.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [d for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 1500
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "tool_calls"
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    assert json.loads(args) == TURNS[0]["args"]


def test_claude_code_result_gives_tokens_dollars_and_its_failure() -> None:
    result = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 3,
              "result": "Fixed it.", "total_cost_usd": 0.0123,
              "usage": {"input_tokens": 100, "cache_read_input_tokens": 2000,
                        "cache_creation_input_tokens": 300, "output_tokens": 50}}
    session = "\n".join(json.dumps(e) for e in ({"type": "system", "subtype": "init"}, result))
    tally = PRESETS["claude-code"].tally(session, "")
    assert (tally.input_tokens, tally.cached_tokens, tally.cache_write_tokens,
            tally.output_tokens, tally.cost_usd, tally.steps, tally.summary, tally.error) == \
        (2400, 2000, 300, 50, 0.0123, 3, "Fixed it.", "")
    over = {**result, "subtype": "error_max_budget_usd", "is_error": True, "result": ""}
    assert PRESETS["claude-code"].tally(json.dumps(over), "").error == \
        "Claude Code stopped: error_max_budget_usd"
    assert PRESETS["claude-code"].tally("not json\n", "").error


def test_codex_turns_add_up_and_a_failed_turn_is_its_error() -> None:
    events = [{"type": "thread.started"},
              {"type": "item.completed", "item": {"type": "command_execution"}},
              {"type": "turn.completed", "usage": {"input_tokens": 1000,
                                                   "cached_input_tokens": 800,
                                                   "output_tokens": 10}},
              {"type": "item.completed", "item": {"type": "agent_message", "text": "Done."}},
              {"type": "turn.completed", "usage": {"input_tokens": 1200, "output_tokens": 5}}]
    tally = PRESETS["codex"].tally("\n".join(map(json.dumps, events)), "")
    assert (tally.input_tokens, tally.cached_tokens, tally.output_tokens, tally.steps,
            tally.summary, tally.cost_usd, tally.error) == (2200, 800, 15, 2, "Done.", None, "")
    failed = [*events, {"type": "turn.failed", "error": {"message": "unexpected status 401"}}]
    assert "401" in PRESETS["codex"].tally("\n".join(map(json.dumps, failed)), "").error


def test_aider_log_gives_tokens_and_cost_and_its_printed_answer() -> None:
    log = [{"event": "launched"},
           {"event": "message_send", "properties": {"prompt_tokens": 700,
                                                    "completion_tokens": 20, "cost": 0.002,
                                                    "total_cost": 0.002}},
           {"event": "message_send", "properties": {"prompt_tokens": 800,
                                                    "completion_tokens": 30, "cost": 0.003,
                                                    "total_cost": 0.005}}]
    output = ("Aider v0.86.2\nRepo-map: using 1024 tokens\n\nfirst answer\n"
              "Tokens: 700 sent, 20 received. Cost: $0.0020 message, $0.0020 session.\n"
              "second answer\nTokens: 800 sent, 30 received. Cost: $0.0030 message, "
              "$0.0050 session.\nApplied edit to calc.py\n")
    tally = PRESETS["aider"].tally("\n".join(map(json.dumps, log)), output)
    assert (tally.input_tokens, tally.output_tokens, tally.cost_usd, tally.steps) == \
        (1500, 50, 0.005, 2)
    assert tally.summary == "second answer\n\nApplied edit to calc.py"
    assert PRESETS["aider"].tally("", "boom").error


def test_each_preset_points_its_cli_at_the_endpoint_and_keeps_the_key_off_its_command() -> None:
    # (In a job the endpoint is the relay's and the key the job's token: test_model_relay.)
    from bot.executor.agent.presets import Endpoint

    end = Endpoint("http://models.internal:8080/v1", "m-1", "sk-secret", 3, 15, 2.5)
    claude, codex, aider = (PRESETS[n] for n in ("claude-code", "codex", "aider"))
    assert claude.env(end)["ANTHROPIC_BASE_URL"] == "http://models.internal:8080"
    assert claude.env(end)["ANTHROPIC_API_KEY"] == "sk-secret"
    assert "--max-budget-usd 2.5" in claude.command(end, "/tmp/spec")
    assert 'model_providers.handoff.base_url="http://models.internal:8080/v1"' in \
        codex.command(end, "/tmp/spec")
    assert codex.env(end) == {"OPENAI_API_KEY": "sk-secret"}
    assert "--openai-api-base http://models.internal:8080/v1" in aider.command(end, "/tmp/s")
    assert all("sk-secret" not in p.command(end, "/tmp/spec") for p in PRESETS.values())


def test_claude_code_and_codex_get_the_mcp_servers_in_their_own_formats() -> None:
    from bot.executor.agent.cli_mcp import Given
    from bot.executor.agent.presets import Endpoint

    config = parse_repo_config("mcp:\n  facts:\n    command: python3\n    args: [f.py]\n"
                               "    env: {MODE: plain}\n", [])
    given = Given(config.mcp, {"docs": "http://127.0.0.1:9/handoff-mcp/docs"}, "job-token")
    end = Endpoint("http://127.0.0.1:9/v1", "m-1", "job-token")
    claude = PRESETS["claude-code"].command(end, "/tmp/spec", given)
    written = json.loads(claude.split("printf %s ", 1)[1].split(" > ", 1)[0].strip("'"))
    assert written == {"mcpServers": {
        "facts": {"type": "stdio", "command": "python3", "args": ["f.py"],
                  "env": {"MODE": "plain"}},
        "docs": {"type": "http", "url": "http://127.0.0.1:9/handoff-mcp/docs",
                 "headers": {"Authorization": "Bearer job-token"}}}}
    assert "--mcp-config /tmp/handoff-mcp.json" in claude and "--strict-mcp-config" in claude
    codex = PRESETS["codex"].command(end, "/tmp/spec", given)
    for override in ['mcp_servers.facts.command="python3"', 'mcp_servers.facts.args=["f.py"]',
                     'mcp_servers.facts.env.MODE="plain"',
                     'mcp_servers.docs.url="http://127.0.0.1:9/handoff-mcp/docs"',
                     'mcp_servers.docs.bearer_token_env_var="OPENAI_API_KEY"']:
        assert f"-c '{override}'" in codex, (override, codex)
    assert "mcp" not in PRESETS["aider"].command(end, "/tmp/spec", given)


def test_a_repository_picks_a_preset_and_gets_the_agents_image(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, agent_image="handoff-sandbox:agents")
    config = parse_repo_config("agent: codex\n", [])
    assert preset_for(config.agent, settings.agent) is PRESETS["codex"]
    assert image_for(config.image, config.agent, settings) == "handoff-sandbox:agents"
    own = parse_repo_config("agent: aider\nimage: acme/tools:1\n", [])
    assert image_for(own.image, own.agent, settings) == "acme/tools:1"
    assert image_for(None, None, settings) is None  # built-in: the server's image
    assert preset_for("built-in", "claude-code") is None
    assert preset_for(None, "claude-code") is PRESETS["claude-code"]
    with pytest.raises(RepoConfigError, match="agent"):
        parse_repo_config("agent: copilot\n", [])


@pytest.mark.podman
async def test_a_session_longer_than_one_read_or_the_output_cap_comes_back_whole(
        tmp_path: Path) -> None:
    lines = [json.dumps({"type": "item.completed", "n": n, "text": "é" * 40},
                        ensure_ascii=False)
             for n in range(3 * CHUNK // 60)]
    work = tmp_path / "ws"
    work.mkdir()
    (work / "session.jsonl").write_text("\n".join(lines) + "\n")
    box = await backend().start("presets-read", work)
    try:
        text, cut = await read_back(box, "/workspace/session.jsonl")
        missing, _ = await read_back(box, "/tmp/none.jsonl")
    finally:
        await box.close()
    assert text.splitlines() == lines and cut == 0
    assert missing == ""


@pytest.mark.podman
async def test_a_preset_whose_cli_the_image_lacks_says_how_to_get_it(tmp_path: Path) -> None:
    from bot.executor.agent.cli import CliAgent
    from bot.executor.agent.presets import Endpoint
    from bot.executor.agent.transcript import Transcript
    from bot.jobs.spend import Budget

    work = tmp_path / "ws"
    work.mkdir()
    agent = CliAgent(PRESETS["codex"], Endpoint("http://127.0.0.1:9/v1", "m", "sk-x"),
                     Budget(max_wall_seconds=60), Transcript(tmp_path / "t.jsonl"))
    box = await backend().start("presets-missing", work)  # the default image: no CLIs
    try:
        result = await agent.run("Fix it.", box)
    finally:
        await box.close()
    assert not result.finished and result.category == "agent-error"
    assert result.stop_reason.startswith("Codex CLI is not installed in the job's sandbox")
    assert "build.sh --flavour agents" in result.stop_reason


@pytest.mark.podman
async def test_doctor_says_whether_the_preset_s_image_is_there(tmp_path: Path) -> None:
    from bot.doctor import check_agent

    base = dict(data_dir=tmp_path, sandbox="podman", agent="aider")
    missing = await check_agent(Settings(**base, agent_image="handoff-sandbox:no-such"))
    assert missing is not None and missing[0] is False and "--flavour agents" in missing[2]
    present = await check_agent(Settings(**base, agent_image="handoff-sandbox:dev"))
    assert present is not None and present[0] is True
    assert await check_agent(Settings(data_dir=tmp_path)) is None  # the built-in agent
