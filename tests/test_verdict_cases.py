"""The verdict in the cases the everyday ones leave out: tests that time out, a base commit
whose tests told nothing, a command that fails after the change with no test named, and the
agent's last failed check read from its transcript."""

from __future__ import annotations

import json
from pathlib import Path

from test_testrun import report

from bot.executor.verdict import Comparison, compare, decide, last_failed_check
from bot.jobs.testreport import TestReport
from bot.reporter.wording import RISK_BROKE, RISK_NO_EVIDENCE, TITLE_READY, TITLE_REGRESSED

PYTEST = "python -m pytest -q"


def timed_out() -> TestReport:
    return TestReport(PYTEST, "timed-out", detail="no output for 600 s")


def test_tests_that_time_out_only_after_the_change_are_a_regression() -> None:
    verdict = decide(report([], ["t.a"]), timed_out())
    assert (verdict.conclusion, verdict.title) == ("failure", TITLE_REGRESSED)
    assert verdict.risks[0] == "the tests timed out after the change (no output for 600 s)"
    both = decide(timed_out(), timed_out())  # as slow as before: nothing shown either way
    assert both.conclusion == "neutral" and both.risks == [RISK_NO_EVIDENCE]


def test_without_a_baseline_every_failure_counts_and_every_pass_is_new() -> None:
    could_not = TestReport(PYTEST, "could-not-run", detail="ImportError")
    failing = decide(could_not, report(["t.a"], ["t.b"]))
    assert failing.conclusion == "failure" and failing.new_failures == ["t.a"]
    passing = decide(None, report([], ["t.a", "t.b"]))
    assert (passing.conclusion, passing.title) == ("success", TITLE_READY)
    assert passing.added == ["t.a", "t.b"]
    unnamed = decide(could_not, TestReport("make check", "ran", ok=False, exit_code=2))
    assert unnamed.conclusion == "failure" and unnamed.risks[0] == RISK_BROKE


def test_a_command_that_fails_after_the_change_with_no_test_failing_is_broken() -> None:
    """Every test passes both times, but the command now exits 1 (a lint step, a coverage
    floor): the change broke it."""
    before = report([], ["t.a"])
    after = report([], ["t.a"], ok=False)
    after.complete = False
    verdict = decide(before, after)
    assert verdict.conclusion == "failure" and RISK_BROKE in verdict.risks


def test_a_run_that_did_not_happen_compares_to_nothing() -> None:
    """No regression, no evidence: the verdict says why the tests did not run instead."""
    assert compare(report([], ["t.a"]), TestReport(PYTEST, "could-not-run")) == Comparison()


def test_the_last_failed_check_is_the_agents_last_test_or_script_run(tmp_path: Path) -> None:
    def bash(command: str, ok: bool) -> str:
        return json.dumps({"kind": "tool", "name": "bash", "ok": ok,
                           "arguments": {"command": command}})

    transcript = tmp_path / "transcript.jsonl"
    transcript.write_text("\n".join([
        bash("python3 -m pytest -q tests/test_calc.py", False),
        "a line cut by a crash {",
        json.dumps({"kind": "model", "text": "I will look at the file"}),
        bash("grep -n add calc.py", False),  # reading, not checking
        ""]))
    assert last_failed_check(transcript) == "python3 -m pytest -q tests/test_calc.py"
    with transcript.open("a") as more:
        more.write(bash("./run_checks.sh", True) + "\n")
    assert last_failed_check(transcript) == ""  # its last check passed
    assert last_failed_check(tmp_path / "none.jsonl") == ""
