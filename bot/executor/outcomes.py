"""What a job's step failure means for the job, and the clean-up after every job: a
failure ends it (``JobFailed``), waits it out (``JobDeferred``), or hands it on, and only a
job that is over loses the commit it kept."""

from __future__ import annotations

import contextlib
import logging
import time

from bot.config import Settings
from bot.executor.gitops import GitError, unreachable
from bot.executor.run import Run
from bot.executor.sandbox import SandboxError
from bot.executor.workspace import Workspaces
from bot.github.client import GitHubApiError
from bot.jobs.budgets import OverBudget
from bot.jobs.outcome import JobDeferred, JobFailed
from bot.jobs.states import Failure
from bot.jobs.store import LeaseLost, is_full

log = logging.getLogger("handoff.executor")

# The failures a step may raise that the runner turns into the job's outcome.
STEP_FAILURES = (GitHubApiError, GitError, SandboxError, OverBudget)


def outcome_of(exc: Exception, run: Run, settings: Settings) -> tuple[Exception | None, bool]:
    """The exception to end the job with in place of ``exc`` (None: ``exc`` itself, which
    the worker handles: a full disk defers the job), and whether the job goes on later."""
    if isinstance(exc, OverBudget):
        return JobFailed(Failure.MONTHLY_BUDGET, str(exc)), False
    if isinstance(exc, GitHubApiError):
        if exc.retry_at is not None:  # park the job; no worker sits waiting
            return JobDeferred(exc.retry_at, str(exc), run.record), True
        if exc.unavailable:
            return github_away(run, settings, str(exc)), True
        return JobFailed(Failure.GITHUB_ERROR, str(exc), run.record), False
    if isinstance(exc, GitError) and unreachable(exc):
        return github_away(run, settings, str(exc)), True
    if is_full(exc):  # the worker defers it until there is space
        return None, True
    return JobFailed(Failure.SETUP_FAILED, str(exc), run.record), False


def github_away(run: Run, settings: Settings, why: str) -> JobDeferred:
    """GitHub did not answer past the retries: the job waits and goes on from where it was
    (its work kept), first after ``github_away_seconds``, doubling per deferral."""
    wait = min(600.0, settings.github_away_seconds * 2 ** run.job.deferrals)
    log.warning("job %s: GitHub did not answer; it goes on in %.0f s (%s)", run.job.id, wait,
                why)
    return JobDeferred(time.time() + wait, f"GitHub did not answer: {why}", run.record,
                       stage="github-away")


async def clean_up(run: Run, workspaces: Workspaces, forget: bool) -> None:
    """Save what the job did and remove its sandbox and workspace, whatever happens (a lost
    lease refuses the save; the sandbox goes all the same); once the job is over, its kept
    commit goes too."""
    try:
        await run.save()
    except LeaseLost:
        pass
    except Exception as exc:
        if not is_full(exc):
            raise
        # The job ends or stops all the same; what its last step did is not kept.
        log.error("job %s: could not save its record, the disk is full (%s)", run.job.id, exc)
    finally:
        try:
            await run.closing.aclose()
        finally:
            workspaces.remove(run.job.id)
        if forget and run.record.delivery.kept_sha:
            with contextlib.suppress(GitError):
                await workspaces.forget(run.job.id, run.job.repo)
