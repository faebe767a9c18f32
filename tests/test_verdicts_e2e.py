"""Honest verdicts end to end (issues 12 and 13): the simulator, the scripted model and Podman."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT, TEST_COMMAND

from bot.executor.testrun import PYTEST
from bot.jobs.store import Job
from bot.reporter.status import STAGES
from bot.reporter.wording import (
    RISK_NO_EVIDENCE,
    TITLE_NOT_RUN,
    TITLE_REGRESSED,
    TITLE_UNPROVEN,
    WHY_NO_COMMAND,
)
from devkit.stack import Stack, stack

REPO = "acme/calc"
CONFIG = f"test_command: {TEST_COMMAND}\n"
SUITE = {
    "calc.py": "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
               "def mul(a, b):\n    return a * b\n",
    "test_calc.py": "from calc import add, mul, sub\n\n\ndef test_add():\n    assert add(2, 3) == 5"
                    "\n\n\ndef test_sub():\n    assert sub(3, 2) == 1\n\n\ndef test_mul():\n"
                    "    assert mul(2, 3) == 6\n\n\ndef test_zero():\n    assert add(0, 0) == 0\n",
    ".github/handoff.yml": CONFIG,
}

pytestmark = pytest.mark.podman


async def handed_over(s: Stack, repo_files: dict[str, str], title: str, body: str) -> Job:
    s.sim.add_repo(REPO, repo_files)
    number = s.sim.open_issue(REPO, title, body, "acme").number
    s.sim.label_issue(REPO, number, "agent", "acme")
    return await s.wait_job(lambda j: j.issue_number == number and j.kind == "implement")


def the_pr(s: Stack) -> Any:
    return next(i for i in s.sim.get_repo(REPO).issues.values() if i.pull)


def status_comment(s: Stack, number: int = 1) -> str:
    return next(c.body for c in s.sim.get_repo(REPO).issues[number].comments
                if "handoff:status" in c.body)


def finish(summary: str) -> dict[str, Any]:
    return {"tool": "finish", "args": {"summary": summary}}


async def test_one_failure_becoming_several_fails_the_check_and_names_them(
        tmp_path: Path) -> None:
    # add() is fixed, sub() and mul() are broken: the suite goes from 1 failing to 2.
    broken = ("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return 0\n\n\n"
              "def mul(a, b):\n    return 0\n")
    script = [{"tool": "create", "args": {"path": "calc.py", "content": broken}},
              finish("1. add() now adds; test_add passes.")]
    async with stack(tmp_path, script) as s:
        job = await handed_over(s, SUITE, "add() subtracts", "- [ ] add(2, 3) returns 5")
        assert job.state == "succeeded", job.reason
        repo = s.sim.get_repo(REPO)
        [check] = repo.check_runs.values()
        assert check.conclusion == "failure" and check.output["title"] == TITLE_REGRESSED
        assert "test_calc.test_sub" in check.output["summary"]
        assert "test_calc.test_mul" in check.output["summary"]
        assert "test_calc.test_add" not in check.output["summary"].split("Newly failing")[1] \
            .split("Now passing")[0]
        pr = the_pr(s)
        assert "fail — 3 passed, 1 failed" in pr.body and "fail — 2 passed, 2 failed" in pr.body
        assert "**Newly failing** (2)" in pr.body and "`test_calc.test_sub`" in pr.body
        status = status_comment(s)
        assert STAGES["done-regressed"] in status and "PR opened with regressions" in status
        assert STAGES["done"] not in status and f"/pull/{pr.number}" in status


async def test_a_comment_only_change_gets_a_neutral_check_and_a_stated_risk(
        tmp_path: Path) -> None:
    script = [{"tool": "bash", "args": {"command": TEST_COMMAND}},
              {"tool": "edit", "args": {"path": "calc.py", "old_text": "def add(a, b):",
                                        "new_text": "def add(a, b):  # adds a and b"}},
              {"tool": "bash", "args": {"command": TEST_COMMAND}},
              finish("Fixed add(): it now returns the sum, as the issue asks.")]
    async with stack(tmp_path, script) as s:
        job = await handed_over(s, {**BUGGY_REPO, ".github/handoff.yml": CONFIG},
                                "add() subtracts", "add(2, 3) gives -1.")
        assert job.state == "succeeded", job.reason
        [check] = s.sim.get_repo(REPO).check_runs.values()
        assert check.conclusion == "neutral" and check.output["title"] == TITLE_UNPROVEN
        pr = the_pr(s)
        assert RISK_NO_EVIDENCE in pr.body and RISK_NO_EVIDENCE in check.output["summary"]
        assert "last check before finishing failed" in pr.body
        assert "The issue states none." in pr.body  # a sentence is not a criterion
        assert STAGES["done-unproven"] in status_comment(s)


async def test_without_a_test_command_the_discovered_one_runs_and_is_named(
        tmp_path: Path) -> None:
    files = {**BUGGY_REPO, "pyproject.toml": "[project]\nname = 'calc'\n\n"
             "[tool.pytest.ini_options]\naddopts = '-q'\n"}
    async with stack(tmp_path, FIX_SCRIPT) as s:
        job = await handed_over(s, files, "add() subtracts", "- [ ] add(2, 3) returns 5")
        assert job.state == "succeeded", job.reason
        assert job.result.tests.command == PYTEST
        pr = the_pr(s)
        assert f"Command: `{PYTEST}` — `pyproject.toml` configures pytest" in pr.body
        assert "fail — 1 failed" in pr.body and "pass — 1 passed" in pr.body
        [check] = s.sim.get_repo(REPO).check_runs.values()
        assert check.conclusion == "success", check.output
        assert "**Now passing** (failed before): `test_calc.test_add`" in pr.body


async def test_a_command_that_is_not_found_means_tests_not_run(tmp_path: Path) -> None:
    files = {**BUGGY_REPO, ".github/handoff.yml": "test_command: nosuchrunner -q\n"}
    async with stack(tmp_path, FIX_SCRIPT) as s:
        job = await handed_over(s, files, "add() subtracts", "- [ ] add(2, 3) returns 5")
        assert job.state == "succeeded", job.reason
        [check] = s.sim.get_repo(REPO).check_runs.values()
        assert check.conclusion == "neutral" and check.output["title"] == TITLE_NOT_RUN
        pr = the_pr(s)
        assert "not run: configuration error" in pr.body and "command not found" in pr.body
        assert "configuration error, not a test failure" in pr.body
        assert "fail" not in pr.body.split("## Tests")[1].split("## Cost")[0].replace(
            "failure", "")
        assert STAGES["done-untested"] in status_comment(s)
        # The agent's own runs did not count as a test failure either.
        assert s.model.requests and job.category == ""


async def test_no_test_command_at_all_is_tests_not_run(tmp_path: Path) -> None:
    files = {"calc.py": BUGGY_REPO["calc.py"], "README.md": "# calc\n"}
    script = [FIX_SCRIPT[2], finish("add() now adds.")]
    async with stack(tmp_path, script) as s:
        job = await handed_over(s, files, "add() subtracts", "fix add")
        assert job.state == "succeeded", job.reason
        [check] = s.sim.get_repo(REPO).check_runs.values()
        assert check.conclusion == "neutral" and check.output["title"] == TITLE_NOT_RUN
        assert "**Tests not run:**" in the_pr(s).body and WHY_NO_COMMAND in the_pr(s).body


async def test_the_pr_body_accumulates_across_retry_and_lgtm_starts_nothing(
        tmp_path: Path) -> None:
    first = [*FIX_SCRIPT[:4], finish("1. add(2, 3) returns 5 now: test_add passes.")]
    retry = [{"tool": "edit", "args": {"path": "calc.py", "old_text": "def add(a, b):",
                                       "new_text": "def add(a: float, b: float) -> float:"}},
             finish("Added type hints for floats.")]
    async with stack(tmp_path, first + retry) as s:
        job = await handed_over(s, {**BUGGY_REPO, ".github/handoff.yml": CONFIG},
                                "add() subtracts", "- [ ] add(2, 3) returns 5")
        assert job.state == "succeeded", job.reason
        pr = the_pr(s)
        assert "- [x] add(2, 3) returns 5" in pr.body
        s.sim.comment(REPO, pr.number, "/retry add type hints for floats", "acme")
        again = await s.wait_job(lambda j: j.kind == "retry")
        assert again.state == "succeeded", again.reason
        body = s.sim.get_repo(REPO).issues[pr.number].body
        assert "test_add passes" in body and "Added type hints for floats." in body
        assert "### Iteration 1" in body and "### Iteration 2: `/retry` by @acme" in body
        assert "- [x] add(2, 3) returns 5" in body and "not shown met" not in body
        assert "7 steps" in body and "total over 2 iterations" in body
        both = job.result.agent.spend.input_tokens + again.result.agent.spend.input_tokens
        assert f"{both:,} input" in body
        checks = sorted(s.sim.get_repo(REPO).check_runs.values(), key=lambda c: c.id)
        # The first job's, the retry's on the head it started from (in progress while it
        # worked), and the retry's on its own commit.
        assert [c.conclusion for c in checks] == ["success", "success", "success"]
        assert checks[1].head_sha == checks[0].head_sha != checks[2].head_sha
        assert "fail — 1 failed" in body  # the base commit's run stays the baseline

        # A COMMENTED review that only says LGTM starts nothing.
        jobs_before = len(await s.store.list_jobs(50))
        s.sim.review(REPO, pr.number, "commented", "LGTM", "acme")
        await s.sim.settle()
        await asyncio.sleep(1.5)
        await s.sim.settle()
        assert len(await s.store.list_jobs(50)) == jobs_before
