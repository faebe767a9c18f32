"""The verdict on an agent's change: the tests compared test by test, and the agent's own
checks. Its sentences (check run, PR body, status comment) are the reporter's wording."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.jobs.testreport import TestReport
from bot.jobs.verdict import Verdict
from bot.reporter.markdown import code
from bot.reporter.wording import (
    RISK_BROKE,
    RISK_LAST_CHECK,
    RISK_MORE_FAILURES,
    RISK_NEW_FAILURES,
    RISK_NO_EVIDENCE,
    RISK_NOT_RUN,
    RISK_TIMED_OUT,
    TITLE_NOT_RUN,
    TITLE_READY,
    TITLE_REGRESSED,
    TITLE_UNPROVEN,
    WHY_BASELINE,
    WHY_CONFIG,
    WHY_COULD_NOT_RUN,
    WHY_NO_COMMAND,
    WHY_NO_TESTS,
    WHY_SERVICE,
    WHY_SETUP_FAILED,
)

STAGE_DONE = "done"
STAGE_REGRESSED = "done-regressed"
STAGE_NOT_RUN = "done-untested"
STAGE_UNPROVEN = "done-unproven"
# Templates whose work is not meant to change behaviour: no test evidence is expected.
NO_EVIDENCE_NEEDED = ("docs", "refactor")
MAX_NAMED = 20


@dataclass
class Comparison:
    """The tests after the change against the tests on the base commit."""

    new_failures: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    regression: bool = False
    evidence: bool = False
    risks: list[str] = field(default_factory=list)


def compare(before: TestReport | None, after: TestReport) -> Comparison:
    """Test by test where both runs name their failures, by counts where only counts are
    known, and by the whole command's pass/fail where nothing else is."""
    out = Comparison()
    if after.state == "timed-out":
        out.regression = before is None or before.state != "timed-out"
        if out.regression:
            out.risks.append(RISK_TIMED_OUT.format(detail=after.detail))
        return out
    if not after.ran and after.state != "no-tests":
        return out
    empty = before is not None and before.state == "no-tests"
    comparable = before is not None and (before.ran or empty)
    if not comparable:  # the base commit's run says nothing: every failure counts
        out.new_failures = list(after.failing)
        out.regression = not after.ok
        if out.regression and not out.new_failures:
            out.risks.append(RISK_BROKE)
        out.added = [t for t, o in after.outcomes.items() if o == "passed"]
        out.evidence = bool(out.added)
        return out
    assert before is not None
    before_failing = set(before.failing)
    if after.complete and (before.complete or empty):
        out.new_failures = [t for t in after.failing if t not in before_failing]
    elif (after.bad() or 0) > (before.bad() or 0):
        out.risks.append(RISK_MORE_FAILURES.format(after=after.bad(), before=before.bad()))
        out.regression = True
    if after.outcomes and (before.outcomes or empty):
        out.fixed = [t for t in before.failing if after.outcomes.get(t) == "passed"]
        out.added = [t for t, o in after.outcomes.items()
                     if o == "passed" and t not in before.outcomes]
        out.evidence = bool(out.fixed or out.added)
    elif after.counts and before.counts:
        fewer_failing = (before.bad() or 0) - (after.bad() or 0)
        more_passing = after.counts.get("passed", 0) - before.counts.get("passed", 0)
        out.evidence = not out.new_failures and (fewer_failing > 0 or more_passing > 0)
        out.fixed = [t for t in before.failing if t not in after.failing] \
            if fewer_failing > 0 else []
    if out.new_failures:
        out.regression = True
        names = ", ".join(code(t) for t in out.new_failures[:MAX_NAMED])
        more = len(out.new_failures) - MAX_NAMED
        out.risks.append(RISK_NEW_FAILURES.format(
            count=len(out.new_failures), names=names + (f" and {more} more" if more > 0 else "")))
    elif before.ok and not after.ok and not out.regression:
        out.regression = True
        out.risks.append(RISK_BROKE)
    return out


def decide(before: TestReport | None, after: TestReport | None, *, prior_evidence: bool = False,
           evidence_expected: bool = True, last_failed_check: str = "",
           setup_failure: str = "") -> Verdict:
    """The verdict on a change from its test runs, the agent's own last check, and the
    setup's failure if it failed (the cause named when the tests then cannot run)."""
    if after is None or after.state in ("not-run", "config-error", "no-tests",
                                        "could-not-run") or (
            before is not None and before.state == "config-error"):
        why = _why_not_run(before, after, setup_failure)
        return Verdict("neutral", TITLE_NOT_RUN, STAGE_NOT_RUN, tests_run=False,
                       evidence=prior_evidence, risks=[RISK_NOT_RUN.format(why=why)])
    cmp = compare(before, after)
    evidence = cmp.evidence or prior_evidence
    verdict = Verdict("success", TITLE_READY, STAGE_DONE, regression=cmp.regression,
                      evidence=evidence, risks=list(cmp.risks), new_failures=cmp.new_failures,
                      fixed=cmp.fixed, added=cmp.added)
    if not evidence and evidence_expected:
        verdict.risks.append(RISK_NO_EVIDENCE)
        if last_failed_check:
            verdict.risks.append(RISK_LAST_CHECK.format(command=code(last_failed_check[:200])))
        verdict.conclusion, verdict.title, verdict.stage = "neutral", TITLE_UNPROVEN, \
            STAGE_UNPROVEN
    if cmp.regression:
        verdict.conclusion, verdict.title, verdict.stage = "failure", TITLE_REGRESSED, \
            STAGE_REGRESSED
        verdict.category = "tests-regressed"
    return verdict


def _why_not_run(before: TestReport | None, after: TestReport | None,
                 setup_failure: str = "") -> str:
    for report in (before, after):
        if report is not None and report.state in ("config-error", "could-not-run") and \
                setup_failure:
            return WHY_SETUP_FAILED.format(detail=report.line(), setup=setup_failure)
        if report is not None and report.state == "config-error":
            return WHY_CONFIG.format(detail=report.detail)
    report = after or before
    if report is not None and report.state == "could-not-run":
        if report.needs:
            return WHY_SERVICE.format(needs=report.needs)
        return WHY_COULD_NOT_RUN.format(detail=report.detail)
    if report is None or report.state == "not-run":
        return WHY_NO_COMMAND
    if report.state == "no-tests":
        return WHY_NO_TESTS.format(detail=report.detail or report.command)
    return WHY_BASELINE.format(line=report.line())


CHECK_LIKE = re.compile(r"\b(pytest|unittest|python3?|node|npm|pnpm|yarn|go|cargo|make|tox|"
                        r"nox|jest|mocha|bash|sh)\b|\./")
NOT_A_CHECK = re.compile(r"^\s*(grep|rg|cat|ls|find|sed|head|tail|wc|echo|git)\b")


def last_failed_check(transcript: Path | None) -> str:
    """The agent's last command that ran something (a test, a script) if it failed, from the
    worker's own transcript of the job; "" when it passed or there is none."""
    if transcript is None or not transcript.exists():
        return ""
    last: dict[str, Any] | None = None
    for line in transcript.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("kind") != "tool" or entry.get("name") != "bash":
            continue
        command = str((entry.get("arguments") or {}).get("command", ""))
        if CHECK_LIKE.search(command) and not NOT_A_CHECK.match(command):
            last = entry
    if last is None or last.get("ok", True):
        return ""
    return str(last["arguments"]["command"])
