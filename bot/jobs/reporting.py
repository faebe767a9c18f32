"""Posting final jobs' reports: each claimed by one worker, backed off when GitHub is away,
given up on (loudly) when it can never be posted."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection

from bot import logs
from bot.jobs.outcome import Unreportable
from bot.jobs.persist import persist
from bot.jobs.roles import Reporter
from bot.jobs.states import Failure
from bot.jobs.store import Job, Reports
from bot.jobs.worker_settings import WorkerSettings

log = logging.getLogger("handoff.worker")


class ReportQueue:
    """Posts the reports of final jobs."""

    def __init__(self, store: Reports, reporter: Reporter, settings: WorkerSettings) -> None:
        self.store, self.reporter, self.settings = store, reporter, settings
        self.unreportable_total = 0  # handoff_job_reports_unreportable_total, this process

    async def _persist(self, job_id: int, what: str,
                       write: Callable[[], Awaitable[None]]) -> None:
        await persist(job_id, what, write, self.settings.lease_seconds,
                      min(1.0, self.settings.poll_seconds))

    async def report(self, job_id: int) -> None:
        """Post the end of a job this worker just finished (finish() claimed its report)."""
        job = await self.store.get_job(job_id)
        if job is None or job.reported or job.unreportable:
            return
        await self.post(job)

    async def pending(self, exclude: Collection[int] = ()) -> None:
        """Report final jobs nobody reported yet (cancelled while queued, or a report that
        failed): each claimed first, so two workers never post the same one, the one waiting
        longest first, a few per round; never one of ``exclude`` (jobs running here)."""
        for _ in range(self.settings.reports_per_round):
            job = await self.store.claim_report(self.settings.report_hold_seconds, exclude)
            if job is None:
                return
            await self.post(job)

    async def post(self, job: Job) -> None:
        """Post a claimed report; on failure it backs off (per job, doubling) or, when it can
        never be posted, is marked unreportable. Every line logged meanwhile names the job."""
        with logs.bound(job=job.id, repo=job.repo):
            await self._post(job)

    async def _post(self, job: Job) -> None:
        tries = max(1, job.report_attempts)
        if job.category == Failure.NOT_PERMITTED and await self.store.refused_before(job):
            log.warning("job %s: @%s was told on %s#%s before that they may not ask; not "
                        "told again", job.id, job.requested_by, job.repo, job.issue_number)
            await self._persist(job.id, "that it was reported",
                                lambda: self.store.report_done(job.id))
            return
        try:
            await self.reporter.report(job)
        except Unreportable as exc:
            await self._give_up(job, str(exc))
            return
        # A report is a job's last word: whatever stopped it (GitHub away, a bug in its
        # wording) it is tried again later, and given up on loudly, never lost.
        except Exception as exc:
            if tries >= self.settings.max_report_attempts:
                await self._give_up(job, f"{tries} tries failed, the last: {exc}")
                return
            s = self.settings
            wait = min(s.report_retry_max, s.report_retry_seconds * 2 ** (tries - 1))
            log.warning("job %s: could not report its outcome (try %d: %s); trying again in "
                        "%.0f s", job.id, tries, exc, wait)
            error, retry_at = f"{type(exc).__name__}: {exc}", time.time() + wait
            await self._persist(job.id, "its report's failure",
                                lambda: self.store.report_failed(job.id, error, retry_at))
            return
        await self._persist(job.id, "that it was reported",
                            lambda: self.store.report_done(job.id))

    async def _give_up(self, job: Job, why: str) -> None:
        self.unreportable_total += 1
        log.error("job %s (%s#%s, %s) can never be reported on GitHub: %s "
                  "[handoff_job_reports_unreportable_total=%d]", job.id, job.repo,
                  job.issue_number, job.state, why, self.unreportable_total)
        await self._persist(job.id, "that it cannot be reported",
                            lambda: self.store.report_failed(job.id, why, None))
