"""The simulator's scripted CI as Handoff reads it: check runs of another App on pushed commits,
their annotations and Actions job logs (through GitHub's redirect), commit statuses, branch
protection's required checks, and the signed webhooks GitHub sends for them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sim import app_client, simulator

from bot.github.checks import ChecksClient
from bot.github.client import GitHubApiError
from devkit.simulator import Simulator

REPO = "octo/widgets"
LINT = {"result": "fail", "title": "2 problems", "summary": "ruff found 2 problems",
        "annotations": [{"path": "app.py", "start_line": 3, "message": "E501 line too long"}],
        "log": "2026-01-01T00:00:00Z ruff check .\n2026-01-01T00:00:01Z ##[error]app.py:3: "
               "E501\n"}


@asynccontextmanager
async def checks_client(sim: Simulator) -> AsyncIterator[ChecksClient]:
    app = app_client(sim)
    try:
        yield ChecksClient(app, next(iter(sim.world.installations)), REPO)
    finally:
        await app.close()


def events(sim: Simulator) -> list[tuple[str, str]]:
    return [(d.event, d.action) for d in sim.world.deliveries]


async def test_scripted_checks_on_a_push_read_as_github_serves_them(tmp_path: Path) -> None:
    async with simulator(tmp_path) as sim:
        sim.add_repo(REPO, {"app.py": "print('hi')\n"})
        sim.ci.delay = 0.0
        sim.ci.script(REPO, {"lint": [LINT, "pass"], "tests": "pass"})
        sha = sim.push(REPO, "main", {"app.py": "x = 1\n"}, "Change", "alice")
        await sim.settle()
        async with checks_client(sim) as gh:
            runs = {r["name"]: r for r in await gh.check_runs(sha)}
            assert set(runs) == {"lint", "tests"}
            lint = runs["lint"]
            assert (lint["status"], lint["conclusion"]) == ("completed", "failure")
            assert lint["app"]["slug"] == "github-actions"
            assert lint["output"]["summary"] == "ruff found 2 problems"
            assert lint["output"]["annotations_count"] == 1
            assert runs["tests"]["conclusion"] == "success"
            [note] = await gh.annotations(lint["id"])
            assert (note["path"], note["start_line"], note["message"]) == \
                ("app.py", 3, "E501 line too long")
            assert "##[error]app.py:3: E501" in await gh.job_log(lint["id"])
            assert await gh.required_checks("main") is None
            suites = await gh.request("GET", f"/commits/{sha}/check-suites")
            assert [s["conclusion"] for s in suites["check_suites"]] == ["failure"]
            # Every call matched GitHub's description and answered in its shapes.
            checked = [c for c in sim.world.calls if c.get("operation")]
            assert {c["operation"] for c in checked} >= {
                "checks/list-for-ref", "checks/list-annotations",
                "actions/download-job-logs-for-workflow-run",
                "repos/get-status-checks-protection"}
            assert all(not c.get("response_errors") for c in checked), checked
            got = events(sim)
            assert got.count(("check_run", "created")) == 2
            assert got.count(("check_run", "completed")) == 2
            assert ("check_suite", "completed") in got and ("workflow_run", "completed") in got
            suite = json.loads(next(d.payload for d in sim.world.deliveries
                                    if d.event == "check_suite"))
            assert suite["check_suite"]["conclusion"] == "failure"
            assert suite["check_suite"]["head_sha"] == sha
            assert suite["check_suite"]["app"]["slug"] == "github-actions"
            # The next push takes the script's next outcome.
            again = sim.push(REPO, "main", {"app.py": "x = 2\n"}, "Again", "alice")
            await sim.settle()
            assert {r["conclusion"] for r in await gh.check_runs(again)} == {"success"}


async def test_hang_status_protection_and_rerun(tmp_path: Path) -> None:
    async with simulator(tmp_path) as sim:
        sim.add_repo(REPO, {"app.py": "print('hi')\n"})
        sim.ci.delay = 0.0
        sim.ci.script(REPO, {"slow": "hang", "flaky": "flake",
                             "ci/legacy": {"result": "fail", "status": True}})
        sim.ci.protect(REPO, "main", ["flaky", "ci/legacy"])
        sha = sim.push(REPO, "main", {"app.py": "x = 1\n"}, "Change", "alice")
        await sim.settle()
        async with checks_client(sim) as gh:
            runs = {r["name"]: r for r in await gh.check_runs(sha)}
            assert (runs["slow"]["status"], runs["slow"]["conclusion"]) == ("in_progress", None)
            assert runs["flaky"]["conclusion"] == "failure"
            assert ("check_suite", "completed") not in events(sim)  # one run never ends
            [status] = await gh.statuses(sha)
            assert (status["context"], status["state"]) == ("ci/legacy", "failure")
            assert ("status", "") in events(sim)
            # Without administration read, the branch's own protection summary names them.
            assert await gh.required_checks("main") == ["flaky", "ci/legacy"]
            sim.ci.rerun(REPO, runs["flaky"]["check_suite"]["id"])
            await sim.settle()
            runs = {r["name"]: r for r in await gh.check_runs(sha)}
            assert runs["flaky"]["conclusion"] == "success"


async def test_an_app_without_the_new_permissions_still_reads_check_runs(tmp_path: Path) -> None:
    """An installation that has not accepted `actions` and `statuses` read: check runs and
    annotations are read with the job's token; the log and the statuses are refused."""
    async with simulator(tmp_path) as sim:
        sim.add_installation("octo", permissions={
            "issues": "write", "pull_requests": "write", "contents": "write",
            "checks": "write", "metadata": "read"})
        sim.add_repo(REPO, {"app.py": "print('hi')\n"})
        sim.ci.delay = 0.0
        sim.ci.script(REPO, {"lint": LINT})
        sha = sim.push(REPO, "main", {"app.py": "x = 1\n"}, "Change", "alice")
        await sim.settle()
        async with checks_client(sim) as gh:
            [run] = await gh.check_runs(sha)
            assert run["conclusion"] == "failure" and not gh.narrow
            assert len(await gh.annotations(run["id"])) == 1
            with pytest.raises(GitHubApiError) as refused:
                await gh.job_log(run["id"])
            assert refused.value.status == 403


async def test_the_ci_is_scripted_over_http_too(tmp_path: Path) -> None:
    """A simulator run as a process (benches, the demo) takes the same script over HTTP."""
    import httpx

    async with simulator(tmp_path) as sim:
        sim.add_repo(REPO, {"app.py": "print('hi')\n"})
        sim.ci.delay = 0.0
        async with httpx.AsyncClient(base_url=sim.base_url) as http:
            got = await http.post("/_sim/ci/script", json={"repo": REPO,
                                                           "checks": {"lint": "fail"}})
            assert got.status_code == 201
            await http.post("/_sim/ci/protect", json={"repo": REPO, "branch": "main",
                                                      "contexts": ["lint"]})
            assert (await http.post("/_sim/ci/run", json={"repo": REPO, "branch": "main"})
                    ).status_code == 201
            assert (await http.post("/_sim/ci/nope", json={})).status_code == 404
            assert (await http.post("/_sim/ci/script", json={})).status_code == 400
        await sim.settle()
        [run] = sim.get_repo(REPO).check_runs.values()
        assert (run.name, run.conclusion) == ("lint", "failure")
        assert sim.ci.required[(REPO, "main")] == ["lint"]
