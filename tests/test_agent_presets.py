"""Each agent CLI preset runs the real CLI (Claude Code, Codex CLI, aider) in the agents image
against the scripted model server, through the job's relay (the model is on this machine's
loopback, which the sandbox may not reach itself), and opens a pull request whose cost line is
what the CLI reported; its session is in the transcript and its key nowhere on GitHub."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_fixtures import CALC_WITH_TESTS, TEST_COMMAND
from pydantic import SecretStr

from devkit.simulator.git import git as simgit
from devkit.stack import MODEL_KEY, stack

REPO = "acme/calc"
ADMIN = "dashboard-admin-token"
FINAL = {"claude-code": "result", "codex": "turn.completed", "aider": "exit"}
AGENTS_IMAGE = os.environ.get("HANDOFF_AGENTS_IMAGE", "handoff-sandbox:agents")
FIX = "sed -i 's/return a - b/return a + b/' calc.py"
SUMMARY = "Fixed add(): it subtracted. test_add passes."
FIRST, LAST = {"input": 1200, "output": 40}, {"input": 1300, "output": 12}
EDIT = "add() subtracted.\n\ncalc.py\n```\ndef add(a, b):\n    return a + b\n```\n"
# Each script speaks to the CLI in its own tools: a command that fixes the bug, then the end.
SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "claude-code": [
        {"tool": "Bash", "args": {"command": f"{FIX} && {TEST_COMMAND}",
                                  "description": "Fix add() and run the tests"}, "usage": FIRST},
        {"text": SUMMARY, "usage": LAST}],
    "codex": [
        {"tool": "exec_command", "args": {"cmd": f"{FIX} && {TEST_COMMAND}"}, "usage": FIRST},
        {"text": SUMMARY, "usage": LAST}],
    # aider asks to add the file the answer names to its chat, then asks the model again.
    "aider": [{"text": EDIT, "usage": FIRST}, {"text": EDIT, "usage": LAST}],
}
# What each run costs as the CLI counts it: Claude Code at its own price for the model
# (Sonnet 4.5: $3 and $15 a million), the others at the configured one (the same here).
COST = "$0.0083"
TOKENS = "2,500 input and 52 output tokens"
SETTINGS: dict[str, dict[str, Any]] = {
    "claude-code": {"model_provider": "anthropic", "model_name": "claude-sonnet-4-5"},
    "codex": {}, "aider": {},
}


@functools.cache
def image_missing() -> str | None:
    probe = subprocess.run(["podman", "image", "exists", AGENTS_IMAGE], capture_output=True)
    if probe.returncode != 0:
        return (f"needs the agents image {AGENTS_IMAGE}, which is not built "
                "(deploy/sandbox/build.sh --flavour agents)")
    return None


pytestmark = pytest.mark.podman


@pytest.mark.parametrize("preset", list(SCRIPTS))
async def test_preset_runs_the_real_cli_and_reports_its_cost(tmp_path: Path,
                                                             preset: str) -> None:
    if reason := image_missing():
        pytest.skip(reason)
    async with stack(tmp_path, SCRIPTS[preset], dashboard_token=SecretStr(ADMIN),
                     agent=preset, agent_image=AGENTS_IMAGE, egress_allow_private=False,
                     sandbox_memory_mb=2048, max_wall_seconds=240,
                     **SETTINGS[preset]) as s:
        s.sim.add_repo(REPO, CALC_WITH_TESTS)
        job = await s.handed_over(REPO, "add() subtracts", "add(2, 3) returns -1. Fix add().")
        assert job.state == "succeeded", job.reason
        assert s.model.requests, "the CLI never reached the model"
        repo = s.sim.get_repo(REPO)
        pr = next(i for i in repo.issues.values() if i.pull)
        assert f"{TOKENS} · {COST}" in pr.body, pr.body
        assert "Network access refused" not in pr.body, pr.body  # the model's host only
        assert pr.pull is not None
        assert "return a + b" in simgit("show", f"{pr.pull.head}:calc.py", cwd=repo.path)
        texts = json.dumps([pr.body, *(c.body for i in repo.issues.values()
                                       for c in i.comments)])
        assert MODEL_KEY not in texts
        lines = [json.loads(line) for line in Path(job.result.agent.transcript).read_text()
                 .splitlines()]
        events = [line["event"] for line in lines if line["kind"] == "cli_event"]
        assert events and all(line.get("preset") == preset for line in lines
                              if line["kind"] == "cli_event")
        assert MODEL_KEY not in Path(job.result.agent.transcript).read_text()
        async with httpx.AsyncClient(base_url=s.sim.webhook_url.removesuffix("/webhook"),
                                     headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            page = (await http.get(f"/jobs/{job.id}")).text
        assert f"{preset} · {FINAL[preset]}" in page  # the session, event by event


async def test_a_cli_that_fails_ends_the_job_saying_so_on_the_issue(tmp_path: Path) -> None:
    if reason := image_missing():
        pytest.skip(reason)
    # A request the service refuses outright (no retries, unlike a 401 or a 529).
    async with stack(tmp_path, [{"status": 400}], repeat_last=True, agent="claude-code",
                     agent_image=AGENTS_IMAGE, egress_allow_private=False,
                     sandbox_memory_mb=2048, max_wall_seconds=240,
                     **SETTINGS["claude-code"]) as s:
        s.sim.add_repo(REPO, CALC_WITH_TESTS)
        job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
        assert job.state == "failed"
        repo = s.sim.get_repo(REPO)
        assert not any(i.pull for i in repo.issues.values())
        issue = next(i for i in repo.issues.values() if not i.pull)
        said = "\n".join(c.body for c in issue.comments)
        assert "Claude Code failed: API Error: 400" in said, said
        assert MODEL_KEY not in said
