"""Reports of final jobs: which one to post next, held by one worker, and how it went."""

from __future__ import annotations

import time
from collections.abc import Collection

import sqlalchemy as sa

from bot.jobs.schema import jobs
from bot.jobs.states import FINAL_STATES, Failure
from bot.jobs.store.jobs import Job, Jobs


def reportable(now: float) -> sa.ColumnElement[bool]:
    """A final job not reported yet, nor given up on, whose back-off is over."""
    return sa.and_(jobs.c.state.in_(FINAL_STATES), jobs.c.reported.is_(False),
                   jobs.c.unreportable.is_(False),
                   sa.or_(jobs.c.report_after.is_(None), jobs.c.report_after <= now))


class Reports(Jobs):
    """The report columns of the jobs table."""

    async def claim_report(self, hold_seconds: float, exclude: Collection[int] = ()
                           ) -> Job | None:
        """Take the unreported job that has waited longest (never reported first, then by when
        its back-off ends), held for ``hold_seconds`` so no other worker posts it meanwhile."""
        now = time.time()
        due = reportable(now)
        if exclude:
            due = sa.and_(due, jobs.c.id.notin_(list(exclude)))
        pick = (sa.select(jobs.c.id).where(due)
                .order_by(sa.func.coalesce(jobs.c.report_after, 0), jobs.c.id).limit(1)
                .with_for_update(skip_locked=True).scalar_subquery())
        stmt = (jobs.update().where(jobs.c.id == pick, due)
                .values(report_after=now + hold_seconds,
                        report_attempts=jobs.c.report_attempts + 1)
                .returning(*jobs.c))
        row = await self.write(lambda conn: conn.execute(stmt).first())
        return Job.from_row(row) if row else None

    async def refused_before(self, job: Job) -> bool:
        """Whether an earlier job of the same person on the same issue was refused for want
        of write access, and said so (an outsider's later triggers get no more replies)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(jobs.c.id).where(
                jobs.c.repo == job.repo, jobs.c.issue_number == job.issue_number,
                jobs.c.requested_by == job.requested_by, jobs.c.id != job.id,
                jobs.c.category == Failure.NOT_PERMITTED.value,
                jobs.c.reported.is_(True)).limit(1))).first()
        return row is not None

    async def report_done(self, job_id: int) -> None:
        await self.update_job(job_id, reported=True, report_after=None, report_error="")

    async def report_failed(self, job_id: int, error: str, retry_at: float | None) -> None:
        """A report did not get through: try again at ``retry_at``, or never (None: it cannot
        be posted; the job is marked unreportable)."""
        if retry_at is None:
            await self.update_job(job_id, unreportable=True, report_after=None,
                                  report_error=error[:2000])
        else:
            await self.update_job(job_id, report_after=retry_at, report_error=error[:2000])

    async def report_counts(self) -> dict[str, int]:
        """Final jobs by report state: ``reported``, ``pending`` (to be retried) and
        ``unreportable`` (exported as ``handoff_job_reports{state}``)."""
        state = sa.case((jobs.c.reported.is_(True), "reported"),
                        (jobs.c.unreportable.is_(True), "unreportable"), else_="pending")
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(state, sa.func.count()).where(
                jobs.c.state.in_(FINAL_STATES)).group_by(state))).all()
        counts = {"reported": 0, "pending": 0, "unreportable": 0}
        counts.update({str(r[0]): int(r[1]) for r in rows})
        return counts
