"""The repository's MCP servers for the agent CLI presets: Claude Code and Codex CLI, real, in
the agents image, against the scripted model, call a local server's tool (run by the CLI in
the sandbox) and a remote one's (through the job's relay, which adds its secret header); each
result reaches the model and the transcript, the secret neither. aider takes none: the PR
says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import CALC_WITH_TESTS, TEST_COMMAND
from test_agent_presets import AGENTS_IMAGE, FIX, SETTINGS, SUMMARY, image_missing
from test_agent_presets import SCRIPTS as PRESET_SCRIPTS
from test_mcp import LOCAL, SERVER, TOKEN, remote_app

from bot.server import running
from devkit.stack import MODEL_KEY, stack

REPO = "acme/calc"
PORT = "The service listens on port 8042."
ECHO = "you sent the token [redacted]"
SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "claude-code": [
        {"tool": "mcp__facts__lookup", "args": {"key": "port"}},
        {"tool": "mcp__docs__whoami", "args": {}},
        {"tool": "Bash", "args": {"command": f"{FIX} && {TEST_COMMAND}",
                                  "description": "Fix add() and run the tests"}},
        {"text": SUMMARY}],
    "codex": [
        {"tool": "mcp__facts__lookup", "args": {"key": "port"}},
        {"tool": "mcp__docs__whoami", "args": {}},
        {"tool": "exec_command", "args": {"cmd": f"{FIX} && {TEST_COMMAND}"}},
        {"text": SUMMARY}],
}

pytestmark = pytest.mark.podman


def config(url: str) -> str:
    host = url.removeprefix("http://")
    return (f"test_command: {TEST_COMMAND}\nnetwork: {{allow: ['{host}']}}\n{LOCAL}"
            f"  docs:\n    url: {url}/mcp\n    secrets: [DOCS_TOKEN]\n"
            "    headers: {Authorization: 'Bearer ${DOCS_TOKEN}'}\n")


@pytest.mark.parametrize("preset", list(SCRIPTS))
async def test_a_cli_calls_the_repositorys_mcp_servers(tmp_path: Path, preset: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if reason := image_missing():
        pytest.skip(reason)
    monkeypatch.setenv("HANDOFF_SECRET_DOCS_TOKEN", TOKEN)
    server, door = remote_app()
    async with running(door) as url, \
            stack(tmp_path, SCRIPTS[preset], agent=preset, agent_image=AGENTS_IMAGE,
                  egress_allow_private=True, sandbox_memory_mb=2048, max_wall_seconds=240,
                  **SETTINGS[preset]) as s:
        s.sim.add_repo(REPO, {**CALC_WITH_TESTS, ".handoff/facts.py": SERVER,
                              ".github/handoff.yml": config(url)})
        job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
        asked = json.dumps(s.model.requests)
        assert job.state == "succeeded", (job.reason, asked[-3000:])
        assert PORT in asked and ECHO in asked  # both results reached the model
        assert set(door.seen) == {f"Bearer {TOKEN}"}  # the relay's header, not the job token
        transcript = Path(job.result.agent.transcript).read_text()
        events = [json.loads(line) for line in transcript.splitlines()]
        said = json.dumps([e["event"] for e in events if e["kind"] == "cli_event"])
        assert PORT in said and ECHO in said
        assert TOKEN not in transcript and TOKEN not in asked
        assert MODEL_KEY not in transcript and MODEL_KEY not in asked
        pr = next(i for i in s.sim.get_repo(REPO).issues.values() if i.pull)
        title = "Claude Code" if preset == "claude-code" else "Codex CLI"
        assert f"- MCP server `facts`: given to {title}, run by it in the sandbox\n" in pr.body
        assert f"- MCP server `docs`: given to {title} through the worker's relay\n" in pr.body
        assert TOKEN not in pr.body and MODEL_KEY not in pr.body


async def test_aider_gets_no_mcp_servers_and_the_pr_says_so(tmp_path: Path) -> None:
    if reason := image_missing():
        pytest.skip(reason)
    async with stack(tmp_path, PRESET_SCRIPTS["aider"], agent="aider",
                     agent_image=AGENTS_IMAGE, egress_allow_private=True,
                     sandbox_memory_mb=2048, max_wall_seconds=240) as s:
        s.sim.add_repo(REPO, {**CALC_WITH_TESTS, ".handoff/facts.py": SERVER,
                              ".github/handoff.yml": f"test_command: {TEST_COMMAND}\n{LOCAL}"})
        job = await s.handed_over(REPO, "add() subtracts", "add(2, 3) returns -1. Fix add().")
        assert job.state == "succeeded", job.reason
        pr = next(i for i in s.sim.get_repo(REPO).issues.values() if i.pull)
        assert "- MCP servers left out: aider takes no MCP servers (the built-in agent, " \
               "Claude Code and Codex CLI get them)\n" in pr.body, pr.body
