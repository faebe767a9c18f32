"""Handoff's check run while a job works on a pull request's head: created ``in_progress``
when the job starts (its current step as the summary, ``details_url`` to the job's dashboard
page), and completed with the verdict, a failure or a cancellation. The runner keeps its id in
``record.delivery.check_run_id`` (with ``check_run_open`` while it is open)."""

from __future__ import annotations

import logging

from bot.github.client import GitHubApiError, RepoClient
from bot.github.naming import CHECK_NAME
from bot.jobs.record import JobRecord
from bot.jobs.store import Job
from bot.reporter.markdown import inline
from bot.reporter.status import STAGES, job_url

log = logging.getLogger("handoff.reporter")


def details(public_url: str, job: Job) -> dict[str, str]:
    """``details_url`` when a public URL is configured (GitHub refuses an empty one)."""
    url = job_url(public_url, job.id)
    return {"details_url": url} if url else {}


class ProgressCheck:
    """The in-progress check run of one job."""

    def __init__(self, gh: RepoClient, job: Job, check_id: int) -> None:
        self.gh, self.job, self.id = gh, job, check_id
        self.last = ""

    async def step(self, stage: str, detail: str = "") -> None:
        """Show the step the job is in as the check run's summary (once per step)."""
        if stage == self.last:
            return
        self.last = stage
        name = STAGES.get(stage, stage)
        summary = name + (f"\n\n{inline(detail)[:2000]}" if detail else "")
        try:
            await self.gh.update_check_run(
                self.id, status="in_progress",
                output={"title": f"Job {self.job.id}: {name}", "summary": summary})
        except GitHubApiError as exc:  # a step shown late is no harm; the verdict follows
            log.warning("job %s: the check run's step could not be shown (%s)", self.job.id,
                        exc)


async def progress_check(gh: RepoClient, job: Job, head_sha: str, open_id: int | None,
                         public_url: str = "") -> ProgressCheck | None:
    """On a pull request's head: Handoff's check run, in progress from now on (``open_id``:
    the one an earlier attempt opened); None for a job not on a pull request yet."""
    if not job.pr_number or not head_sha:
        return None
    if open_id is None:
        check = await gh.create_check_run(
            name=CHECK_NAME, head_sha=head_sha, status="in_progress",
            external_id=str(job.id), **details(public_url, job),
            output={"title": f"Job {job.id}: working", "summary": STAGES["preparing"]})
        open_id = int(check["id"])
    return ProgressCheck(gh, job, open_id)


async def close_open_check(gh: RepoClient, record: JobRecord, conclusion: str, title: str,
                           summary: str) -> bool:
    """Complete the job's check run if it is still open; True if there was one."""
    delivery = record.delivery
    if not delivery.check_run_open or delivery.check_run_id is None:
        return False
    await gh.update_check_run(delivery.check_run_id, status="completed",
                              conclusion=conclusion,
                              output={"title": title, "summary": summary[:60_000]})
    return True
