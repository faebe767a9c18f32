"""The reporter's wording and the status comment's edits, without a sandbox: the failure
comment as a person reads it, final states posted through the simulator, and the status
comment's coalescing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bot.jobs.store import Job
from bot.jobs.worker import Unreportable
from bot.reporter.report import CUT_MARK, GitHubReporter, failure_comment, shorten
from bot.reporter.status import MAX_BODY, STAGES, StatusComment, marker
from devkit.stack import stack

REPO = "acme/calc"


def job(**fields: Any) -> Job:
    values: dict[str, Any] = dict(
        id=7, kind="implement", repo=REPO, installation_id=None, issue_number=1,
        pr_number=None, branch=None, state="failed", stage="agent", requested_by="maya",
        trigger="label", feedback="", context={}, delivery_id=None, attempts=1, reason="",
        category="internal", result={}, cancel_requested=False, cancel_by=None,
        reported=False, not_before=None, deferrals=0, lease_owner=None,
        lease_expires_at=None, created_at=time.time(), updated_at=time.time(),
        started_at=None, finished_at=None)
    return Job(**{**values, **fields})


def test_shorten_cuts_on_a_line_or_word_never_mid_word() -> None:
    assert shorten("  short  ", 20) == "short"
    assert shorten("first line here\nsecond line", 20) == "first line here" + CUT_MARK
    assert shorten("alpha beta gamma delta", 13, "…") == "alpha beta…"
    assert shorten("x" * 30, 10, "…") == "x" * 10 + "…"  # no boundary: a hard cut


def test_a_failure_says_step_cause_what_was_kept_spend_and_how_to_retry() -> None:
    text = failure_comment(job(
        category="budget-exhausted", reason="the step budget of 3 ran out",
        result={"wip_branch": "agent/issue-1-x", "head_sha": "abcdef0123456",
                "spend": {"steps": 3, "input_tokens": 1200, "output_tokens": 34,
                          "cost_usd": 0.01234}}))
    assert text.startswith("**Handoff job 7 failed** while the agent was working.")
    assert "**Cause:** the step budget of 3 ran out" in text
    assert "**Kept:** The work so far is kept on branch `agent/issue-1-x` (commit abcdef0)." \
        in text
    assert "Spent: 3 steps, 1,234 tokens, $0.0123." in text
    assert "raise the budget in `.github/handoff.yml`. Then comment `/agent`" in text


def test_an_iteration_s_failure_asks_for_retry_and_an_unknown_category_has_no_advice() -> None:
    text = failure_comment(job(kind="retry", pr_number=4, category="mystery", reason="odd"))
    assert "while running the job" in text and "Nothing was pushed." in text
    assert "**To try again:** Then comment `/retry <what to do differently>`." in text


def test_a_cut_cause_carries_the_full_summary_and_secrets_are_redacted() -> None:
    summary = "line one\n" + "word " * 200
    text = failure_comment(job(category="no-changes", reason="no change: " + shorten(
        summary, 50) + " ghp_abcdefghijklmnopqrstuvwxyz", result={"summary": summary}))
    assert "<details><summary>The agent's full summary</summary>" in text
    assert "word word" in text.split("<details>")[1]
    assert "ghp_" not in text and "[redacted]" in text
    plain = failure_comment(job(category="no-changes", reason="no change",
                                result={"summary": "short"}))
    assert "<details>" not in plain


def test_a_non_writer_is_thanked_not_told_of_a_failure() -> None:
    text = failure_comment(job(category="not-permitted", requested_by="outsider"))
    assert text.startswith("Thanks for the request, @outsider.") and "failed" not in text


async def test_final_states_posted_on_github(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    async with stack(tmp_path, [], sandbox="local") as s:
        s.sim.add_repo(REPO, {"README.md": "# calc\n"})
        issue = s.sim.open_issue(REPO, "Fix", "x", "acme").number
        pr = s.sim.open_issue(REPO, "Other", "y", "acme").number
        [inst] = s.sim.world.installations
        reporter = s.worker.reporter
        assert isinstance(reporter, GitHubReporter)
        repo = s.sim.get_repo(REPO)

        def said(number: int) -> list[str]:
            return [c.body for c in repo.issues[number].comments]

        # Cancelled with no status comment yet: one plain comment.
        await reporter.report(job(installation_id=inst, issue_number=issue,
                                  state="cancelled", reason="the label was removed"))
        [stopped] = said(issue)
        assert stopped.startswith("Stopped job 7: the label was removed.")
        assert "<!-- handoff:final job=7 -->" in stopped  # a retried report finds it
        # Succeeded with no status comment: the PR speaks for itself, nothing more is said.
        await reporter.report(job(id=8, installation_id=inst, issue_number=pr,
                                  state="succeeded"))
        assert said(pr) == []
        # Failed with a status comment: it says where to look, the comment below says why,
        # and the commit it pushed gets a failed check.
        status = StatusComment(s.worker.runner.github.repo(inst, REPO),  # type: ignore[attr-defined]
                               pr, 9, 0)
        await status.set("agent", "working")
        await reporter.report(job(id=9, installation_id=inst, issue_number=pr, state="failed",
                                  category="push-refused", reason="refused " + "x " * 400,
                                  result={"status_comment_id": status.comment_id,
                                          "head_sha": repo_head(repo)}))
        first, failure = said(pr)
        assert STAGES["failed"] in first and "See below: refused x" in first
        assert first.rstrip().endswith("…")
        assert failure.startswith("**Handoff job 9 failed** while pushing the branch")
        [check] = repo.check_runs.values()
        assert check.conclusion == "failure" and check.output["title"] == "Failed: push-refused"
        # The App lost access to the repository: nothing can be posted; the worker hears the
        # job is unreportable (and marks it so, for the job list and the metrics).
        with pytest.raises(Unreportable, match="cannot post in acme/removed"):
            await reporter.report(job(id=10, installation_id=inst, repo="acme/removed",
                                      issue_number=issue))
        assert len(said(issue)) == 1
        # No installation at all: unreportable too, and said why.
        with pytest.raises(Unreportable, match="named no installation"):
            await reporter.report(job(id=11, issue_number=issue))
        assert len(said(issue)) == 1


def repo_head(repo: Any) -> str:
    from devkit.simulator.git import git as simgit

    return simgit("rev-parse", "main", cwd=repo.path).strip()


class FakeIssue:
    """A RepoClient's comment calls, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    async def create_comment(self, number: int, body: str) -> dict[str, Any]:
        self.calls.append(("create", number, body))
        return {"id": 500}

    async def list_comments(self, number: int) -> list[dict[str, Any]]:
        return []  # no status comment posted before

    async def update_comment(self, comment_id: int, body: str) -> dict[str, Any]:
        self.calls.append(("update", comment_id, body))
        return {"id": comment_id}


async def test_status_edits_are_coalesced_and_the_latest_is_kept() -> None:
    gh = FakeIssue()
    status = StatusComment(gh, 3, 12, interval=60)  # type: ignore[arg-type]
    await status.set("preparing")
    assert gh.calls == [("create", 3, f"{marker(12)}\n**Handoff** · job 12 · "
                                      f"{STAGES['preparing']}\n")]
    await status.set("agent", "Step 1")
    await status.set("agent", "Step 2")
    assert len(gh.calls) == 1 and status.dirty  # within the interval: held back
    await status.flush()
    assert gh.calls[-1] == ("update", 500, status.text("agent", "Step 2"))
    await status.flush()
    assert len(gh.calls) == 2  # nothing new: nothing sent
    await status.set("failed", "x", force=True)
    assert gh.calls[-1][2].endswith(f"{STAGES['failed']}\n\nx\n")
    await status.set("custom-stage")
    await status.flush()
    assert "job 12 · custom-stage" in gh.calls[-1][2]  # an unknown stage shows as named


@pytest.mark.parametrize("size", [10, MAX_BODY * 2])
def test_a_status_body_never_passes_github_s_limit(size: int) -> None:
    body = StatusComment(FakeIssue(), 1, 1).text("agent", "y" * size)  # type: ignore[arg-type]
    assert len(body) <= MAX_BODY + 10
    assert body.endswith("…(cut)\n") == (size > MAX_BODY)


async def test_agent_progress_reads_as_a_person_would() -> None:
    from bot.jobs.spend import Spend

    gh = FakeIssue()
    status = StatusComment(gh, 1, 2, interval=0)  # type: ignore[arg-type]
    spend = Spend(steps=4, input_tokens=1500, output_tokens=500, cost_usd=0.0123,
                  started=time.monotonic() - 42.4)
    await status.agent_progress(spend)
    assert gh.calls[-1][2].endswith(
        f"{STAGES['agent']}\n\nStep 4 · 42s elapsed · 2,000 tokens · $0.0123 so far\n")
