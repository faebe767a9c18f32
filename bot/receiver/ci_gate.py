"""Whether a failed check may start a ``ci-fix`` job, from what the store knows.

A check counts only on the commit Handoff pushed last on its agent pull request: a commit a
person pushed is theirs (Handoff acts on it when a person asks, with ``/retry``). One job per
commit: a second check failing on a commit already looked at, or while a job is under way on the
pull request, starts nothing. A check that fails on the commit a job under way has just pushed
(GitHub's CI can be quicker than the job's last steps) is noted on that job, and its fix starts
when the job ends (``follow_up`` in bot/receiver/ingest.py, called by the worker).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bot.jobs.schema import jobs
from bot.jobs.store import Job
from handlers.vocabulary import CI_FIX, StartJob

RECENT = 50  # the pull request's latest jobs looked through
NOTE = "ci_after"  # the key of a noted check in a job's context


def pr_jobs(conn: sa.Connection, repo: str, issue_number: int) -> list[Job]:
    """The latest jobs on the issue's agent pull request, newest first."""
    rows = conn.execute(jobs.select().where(
        jobs.c.repo == repo, jobs.c.issue_number == issue_number,
        jobs.c.pr_number.is_not(None)).order_by(jobs.c.id.desc()).limit(RECENT)).all()
    return [Job.from_row(r) for r in rows]


def pushed_last(history: list[Job]) -> str:
    """The commit Handoff pushed last on the pull request ("" if none is known): a job's
    push, or else the commit a ``ci-fix`` job was started for (Handoff's push, by the rules
    here) and has not replaced."""
    for job in history:
        if job.result.delivery.head_sha and job.result.delivery.pushed_branch:
            return job.result.delivery.head_sha
        if job.kind == CI_FIX and job.context.get("head_sha"):
            return str(job.context["head_sha"])
    return ""


def running_pushed(conn: sa.Connection, job_id: int, sha: str) -> bool:
    """Whether the job under way has pushed ``sha`` (its record says so once pushed)."""
    row = conn.execute(jobs.select().where(jobs.c.id == job_id)).first()
    if row is None:
        return False
    pushed = Job.from_row(row).result.delivery
    return bool(sha) and pushed.head_sha == sha and bool(pushed.pushed_branch)


def why_not(conn: sa.Connection, decision: StartJob, active: tuple[int, str] | None) -> str:
    """Why this failed check starts no job ("" if it does, or is noted on the job under way
    that pushed its commit); ``active`` is the issue's job under way, if any."""
    assert decision.issue_number is not None
    sha = str(decision.context.get("head_sha", ""))
    if active is not None:
        if running_pushed(conn, active[0], sha):
            return ""
        return f"job {active[0]} is under way on #{decision.issue_number}"
    history = pr_jobs(conn, decision.repo, decision.issue_number)
    if not history:
        return f"#{decision.issue_number} has no agent pull request"
    ours = pushed_last(history)
    if sha != ours:
        return (f"{sha[:7]} is not the commit Handoff pushed last ({ours[:7] or 'none'}); "
                "a commit someone else pushed is theirs, and Handoff works on it only when "
                "asked (/retry)")
    if seen := next((j for j in history if j.kind == CI_FIX and
                     j.context.get("head_sha") == sha), None):
        return f"job {seen.id} looked at the checks of {sha[:7]} already"
    return ""


def note(conn: sa.Connection, job_id: int, decision: StartJob, delivery_id: str) -> str:
    """Keep the failed check on the job under way that pushed its commit; what the delivery
    log says of it."""
    context = dict(conn.execute(sa.select(jobs.c.context).where(jobs.c.id == job_id))
                   .scalar() or {})
    if NOTE in context:
        return f"job {job_id} has a failed check of its commit noted already"
    context[NOTE] = {**decision.context, "delivery": delivery_id}
    conn.execute(jobs.update().where(jobs.c.id == job_id).values(context=context))
    return (f"noted on job {job_id}, which pushed {str(decision.context['head_sha'])[:7]}: "
            "its checks are looked at when it ends")


def noted(job: Job) -> dict[str, Any] | None:
    """The failed check noted on a job while it was under way, if any."""
    found = job.context.get(NOTE)
    return found if isinstance(found, dict) and found.get("head_sha") else None


def origin_of(conn: sa.Connection, repo: str, issue_number: int) -> Job | None:
    """The latest job on the issue's agent pull request (a check names a branch; the status
    API names no pull request at all)."""
    found = pr_jobs(conn, repo, issue_number)
    return found[0] if found else None
