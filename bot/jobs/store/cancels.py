"""Cancels: a queued job ends at once (Event.CANCEL); a running one is asked to stop, and its
worker ends it."""

from __future__ import annotations

import time

import sqlalchemy as sa

from bot.jobs.schema import jobs
from bot.jobs.states import ACTIVE_STATES, Event, Failure, State, move
from bot.jobs.store.jobs import Job, Jobs

RUNNING = State.RUNNING.value


class Cancels(Jobs):
    """The cancel columns of the jobs table, and the cancel of a queued job."""

    def cancel_jobs(
        self, conn: sa.Connection, repo: str, issue_number: int, reason: str, only_queued: bool
    ) -> list[int]:
        """Cancel queued jobs at once; ask running ones to stop. Returns the ids touched."""
        now = time.time()
        step = move(Event.CANCEL, only=(State.QUEUED,))
        queued = conn.execute(
            jobs.update().where(jobs.c.repo == repo, jobs.c.issue_number == issue_number,
                                jobs.c.state.in_(step.source_values))
            .values(state=step.target.value, reason=reason, category=Failure.CANCELLED.value,
                    finished_at=now, updated_at=now).returning(jobs.c.id)).scalars().all()
        running: list[int] = []
        if not only_queued:
            running = list(conn.execute(
                jobs.update().where(jobs.c.repo == repo, jobs.c.issue_number == issue_number,
                                    jobs.c.state == RUNNING)
                .values(cancel_requested=True, reason=reason, updated_at=now)
                .returning(jobs.c.id)).scalars().all())
        return [*queued, *running]

    def request_cancel(self, conn: sa.Connection, repo: str, issue_number: int, by: str,
                       reason: str = "", states: tuple[str, ...] = ACTIVE_STATES
                       ) -> list[int]:
        """Note a cancel (a /cancel, or closing the issue: ``reason``) on the issue's active
        jobs in ``states``; it acts once ``by`` is found to have write access."""
        return list(conn.execute(
            jobs.update().where(jobs.c.repo == repo, jobs.c.issue_number == issue_number,
                                jobs.c.state.in_(states))
            .values(cancel_by=by, cancel_reason=reason or None, updated_at=time.time())
            .returning(jobs.c.id)).scalars().all())

    async def cancel_requests(self) -> list[Job]:
        """Active jobs with a /cancel whose author's permission is not checked yet."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(jobs.select().where(
                jobs.c.cancel_by.is_not(None), jobs.c.state.in_(ACTIVE_STATES))
                .order_by(jobs.c.id))).all()
        return [Job.from_row(r) for r in rows]

    async def settle_cancel(self, job: Job, allowed: bool) -> None:
        """Carry out a checked /cancel (a queued job ends, a running one is asked to stop),
        or drop a refused one."""
        now = time.time()
        reason = job.cancel_reason or f"/cancel by @{job.cancel_by}"
        step = move(Event.CANCEL, only=(State.QUEUED,))

        def settle(conn: sa.Connection) -> None:
            conn.execute(jobs.update().where(jobs.c.id == job.id)
                         .values(cancel_by=None, cancel_reason=None, updated_at=now))
            if not allowed:
                return
            conn.execute(jobs.update().where(jobs.c.id == job.id,
                                             jobs.c.state.in_(step.source_values))
                         .values(state=step.target.value, reason=reason,
                                 category=Failure.CANCELLED.value, finished_at=now))
            conn.execute(jobs.update().where(jobs.c.id == job.id, jobs.c.state == RUNNING)
                         .values(cancel_requested=True, reason=reason))

        await self.write(settle)
