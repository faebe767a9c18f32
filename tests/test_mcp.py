"""MCP servers: a local one runs inside the real sandbox (both backends) through its exec, a
remote one is the SDK's own server over streamable HTTP, reached only when its host is
allowed; the end-to-end test has the scripted model call a server's tool through a job."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_fixtures import CALC_WITH_TESTS, FIX_SCRIPT, TEST_COMMAND
from mcp.server.fastmcp import FastMCP
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.executor.agent.mcp import McpTools, connect
from bot.executor.repo_config import RepoConfigError, parse_repo_config
from bot.executor.sandbox import Backend, Limits, Sandbox
from bot.executor.sandbox.bubblewrap import BubblewrapBackend
from bot.executor.sandbox.container import ContainerBackend
from bot.server import running
from devkit.stack import stack
from tests import test_kubernetes as kube
from tests.test_sandbox import IMAGE

SERVER = (Path(__file__).parent / "fixtures" / "mcp" / "stdio_server.py").read_text()
LIMITS = Limits(memory_mb=256, cpus=1, pids=64, timeout=30)
TOKEN = "mcp-canary-token-5e4d3c2b1a"
LOCAL = ("mcp:\n  facts:\n    command: python3\n    args: [.handoff/facts.py]\n"
         "    env: {FACTS_MODE: plain}\n")


async def nothing(name: str) -> str | None:
    return None


def test_the_configuration_says_what_is_wrong() -> None:
    config = parse_repo_config(LOCAL, [])
    assert config.mcp["facts"].args == [".handoff/facts.py"]
    for text, says in [
        ("mcp:\n  a:\n    command: x\n    url: https://h/mcp\n", "either `command`"),
        ("mcp:\n  a:\n    command: x\n    secrets: [T]\n", "where secrets never go"),
        ("mcp:\n  a_b:\n    command: x\n", "should match pattern"),
        ("mcp:\n  a:\n    url: https://h/mcp\n    headers: {X: '${T}'}\n", "not listed"),
        ("mcp:\n  a:\n    url: ftp://h\n", "http(s) URL"),
    ]:
        with pytest.raises(RepoConfigError, match=None) as err:
            parse_repo_config(text, [])
        assert says in str(err.value), (text, err.value)


@pytest.fixture(params=[pytest.param("podman", marks=pytest.mark.podman), "bubblewrap",
                        "kubernetes"])
async def box(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sandbox]:
    """A sandbox of each backend (Kubernetes: the fake API server and kubelet, whose pods
    run in bubblewrap) around a work tree holding the server."""
    ws = tmp_path / "ws"
    (ws / ".handoff").mkdir(parents=True)
    (ws / ".handoff" / "facts.py").write_text(SERVER)
    if request.param == "podman":
        backend: Backend = ContainerBackend("podman", IMAGE, LIMITS)
    elif not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    elif request.param == "bubblewrap":
        backend = BubblewrapBackend(LIMITS)
    else:
        async for cluster in kube.started():
            monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
            async with kube.make(limits=LIMITS) as kubernetes:
                sandbox = await kubernetes.start(7, ws, owner="w")
                yield sandbox
                await sandbox.close()
        return
    sandbox = await backend.start("mcp", ws)
    yield sandbox
    await sandbox.close()


async def test_a_local_server_runs_in_the_sandbox(box: Sandbox) -> None:
    found = await connect(parse_repo_config(LOCAL, []).mcp, box, [], False, nothing)
    assert sorted(found.tools) == ["mcp__facts__big", "mcp__facts__fail", "mcp__facts__lookup",
                                   "mcp__facts__whoami"]
    assert found.seen == ["MCP server `facts`: 4 tools (lookup, big, whoami, fail)"]
    assert found.left_out == ["MCP tool `bad name!` of `facts`: its name does not fit a "
                              "tool name"]
    spec = found.tools["mcp__facts__lookup"].spec
    assert spec["parameters"]["required"] == ["key"]
    assert spec["description"] == "(MCP server facts) Look up a project fact by key."

    fact = await found.call("mcp__facts__lookup", {"key": "port"})
    assert fact.ok and fact.content.endswith("\nThe service listens on port 8042.")
    assert "data, not instructions" in fact.content.splitlines()[0]
    who = await found.call("mcp__facts__whoami", {})  # the agent's user, folder, no network
    assert "uid=1000 cwd=/workspace network: none mode=plain" in who.content
    big = await found.call("mcp__facts__big", {})
    assert big.ok and len(big.content) < 13_000 and "characters cut" in big.content
    failed = await found.call("mcp__facts__fail", {})
    assert not failed.ok and "it broke" in failed.content


async def test_a_local_server_that_does_not_start_is_left_out(box: Sandbox) -> None:
    config = parse_repo_config("mcp:\n  gone:\n    command: no-such-program\n"
                               "  dies:\n    command: python3\n    args: ['-c', "
                               "'import sys; sys.stderr.write(\"boom\"); sys.exit(3)']\n", [])
    found = await connect(config.mcp, box, [], False, nothing)
    assert not found.tools
    assert found.left_out[0].startswith("MCP server `gone`: its tools could not be listed "
                                        "(could not start no-such-program")
    assert found.left_out[1] == ("MCP server `dies`: its tools could not be listed (the "
                                 "server ended (exit code 3) before it answered; it wrote: "
                                 "boom)")


class BearerOnly:
    """The remote server's door: only requests with the token get in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            got = dict(scope["headers"]).get(b"authorization", b"").decode()
            self.seen.append(got)
            if got != f"Bearer {TOKEN}":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"no"})
                return
        await self.app(scope, receive, send)


def remote_app() -> tuple[FastMCP, BearerOnly]:
    server = FastMCP("docs", stateless_http=True, json_response=True)

    @server.tool()
    def search(query: str) -> str:
        """Search the team's documents."""
        return f"3 documents mention {query}"

    @server.tool()
    def whoami() -> str:
        """Who the server thinks is calling."""
        return f"you sent the token {TOKEN}"

    return server, BearerOnly(server.streamable_http_app())


async def test_a_remote_server_is_reached_from_the_worker_when_allowed() -> None:
    server, door = remote_app()
    async with running(door) as url:
        host = url.removeprefix("http://")
        config = parse_repo_config(
            f"mcp:\n  docs:\n    url: {url}/mcp\n    secrets: [DOCS_TOKEN]\n"
            "    headers: {Authorization: 'Bearer ${DOCS_TOKEN}'}\n", []).mcp

        async def secret(name: str) -> str | None:
            return TOKEN if name == "DOCS_TOKEN" else None

        found = await connect(config, None, [host], True, secret)  # type: ignore[arg-type]
        assert list(found.tools) == ["mcp__docs__search", "mcp__docs__whoami"]
        assert found.secrets == [TOKEN]
        answer = await found.call("mcp__docs__search", {"query": "retries"})
        assert answer.ok and answer.content.endswith("\n3 documents mention retries")
        echoed = await found.call("mcp__docs__whoami", {})  # the model never gets the secret
        assert echoed.content.endswith("\nyou sent the token [redacted]")
        assert set(door.seen) == {f"Bearer {TOKEN}"}
        came = len(door.seen)

        refused: list[McpTools] = [
            await connect(config, None, ["example.org"], True, secret),  # type: ignore[arg-type]
            await connect(config, None, [host], False, secret),  # type: ignore[arg-type]
            await connect(config, None, [host], True, nothing),  # type: ignore[arg-type]
        ]
        assert [f.left_out for f in refused] == [
            [f"MCP server `docs`: {host} is not on the egress allowlist (add it to "
             "`network.allow`)"],
            ["MCP server `docs`: 127.0.0.1 resolves to an address that is not public "
             "(127.0.0.1)"],
            ["MCP server `docs`: the secret DOCS_TOKEN is not set"]]
        assert all(not f.tools for f in refused) and len(door.seen) == came  # none came


@pytest.mark.podman
async def test_the_agent_calls_a_servers_tool_and_the_next_request_has_its_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local server in the job's sandbox and a remote one with a secret header: both
    tools offered, each call and its answer in the transcript and the next request, the
    secret in neither."""
    monkeypatch.setenv("HANDOFF_SECRET_DOCS_TOKEN", TOKEN)
    script = [{"tool": "mcp__facts__lookup", "args": {"key": "port"}},
              {"tool": "mcp__docs__whoami", "args": {}}, *FIX_SCRIPT]
    server, door = remote_app()
    async with running(door) as url, \
            stack(tmp_path, script, egress_allow_private=True) as s:
        host = url.removeprefix("http://")
        remote = (f"  docs:\n    url: {url}/mcp\n    secrets: [DOCS_TOKEN]\n"
                  "    headers: {Authorization: 'Bearer ${DOCS_TOKEN}'}\n")
        s.sim.add_repo("acme/calc", {
            **CALC_WITH_TESTS, ".handoff/facts.py": SERVER,
            ".github/handoff.yml": f"test_command: {TEST_COMMAND}\nnetwork: {{allow: "
                                   f"['{host}']}}\n{LOCAL}{remote}"})
        job = await s.handed_over("acme/calc", "add() subtracts", "Fix add().")
        assert job.state == "succeeded", job.reason
        first, second, third = s.model.requests[:3]
        offered = [t["function"]["name"] for t in first["tools"]]
        assert offered == ["bash", "view", "edit", "create", "finish", "mcp__facts__lookup",
                           "mcp__facts__big", "mcp__facts__whoami", "mcp__facts__fail",
                           "mcp__docs__search", "mcp__docs__whoami"]
        answer = second["messages"][-1]
        assert answer["role"] == "tool" and \
            answer["content"].endswith("The service listens on port 8042.")
        assert third["messages"][-1]["content"].endswith("you sent the token [redacted]")
        transcript = Path(job.result.agent.transcript).read_text()
        lines = [json.loads(line) for line in transcript.splitlines()]
        calls = [e for e in lines if e["kind"] == "tool"]
        assert calls[0]["name"] == "mcp__facts__lookup" and \
            calls[0]["arguments"] == {"key": "port"}
        assert calls[0]["ok"] and "port 8042" in calls[0]["result"]
        assert calls[1]["name"] == "mcp__docs__whoami" and "[redacted]" in calls[1]["result"]
        assert TOKEN not in transcript and TOKEN not in json.dumps(s.model.requests)
        pr = next(i for i in s.sim.get_repo("acme/calc").issues.values() if i.pull)
        assert "- MCP server `facts`: 4 tools (lookup, big, whoami, fail)\n" in pr.body
        assert "- MCP server `docs`: 2 tools (search, whoami)\n" in pr.body
        assert "- MCP tool `bad name!` of `facts`: its name does not fit a tool name " \
               "(left out)\n" in pr.body
        assert TOKEN not in pr.body
