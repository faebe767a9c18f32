"""A worker's hold on a job: claiming it with a lease, renewing it, fenced writes, and the
transitions that end the hold (finish, defer, hand back)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from bot.jobs.record import JobRecord
from bot.jobs.schema import jobs
from bot.jobs.states import Event, Move, State, ending, move
from bot.jobs.store.jobs import Job, Jobs, no_state

# What a write that ends a hold clears.
NO_LEASE: dict[str, Any] = dict(lease_owner=None, lease_expires_at=None, lease_token=None)


class LeaseLost(Exception):
    """This worker's lease on the job is gone (it ran out and another worker took the job, or
    the job was handed back): the write was refused and the job must stop."""


def held(job_id: int, owner: str | None, token: str | None,
         states: tuple[str, ...] = (State.RUNNING.value,)) -> sa.ColumnElement[bool]:
    """The job is running under this lease (the owner's, and this claim's token)."""
    where = sa.and_(jobs.c.id == job_id, jobs.c.state.in_(states))
    if owner is not None:
        where = sa.and_(where, jobs.c.lease_owner == owner)
    if token is not None:
        where = sa.and_(where, jobs.c.lease_token == token)
    return where


class Leases(Jobs):
    """Claims, heartbeats and the fenced writes of the worker that holds a job."""

    async def claim(self, owner: str, lease_seconds: float,
                    exclude: Collection[int] = ()) -> Job | None:
        """Take the oldest queued job (Event.CLAIM), or one whose lease ran out
        (Event.TAKE_OVER), with a fresh lease; never one of ``exclude`` (the jobs this worker
        runs already)."""
        now = time.time()
        fresh, lost = move(Event.CLAIM), move(Event.TAKE_OVER)
        assert fresh.target == lost.target
        claimable = sa.or_(
            sa.and_(jobs.c.state.in_(fresh.source_values),
                    sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now)),
            sa.and_(jobs.c.state.in_(lost.source_values), jobs.c.lease_expires_at < now),
        )
        if exclude:
            claimable = sa.and_(claimable, jobs.c.id.notin_(list(exclude)))
        pick = (sa.select(jobs.c.id).where(claimable).order_by(jobs.c.id).limit(1)
                .with_for_update(skip_locked=True).scalar_subquery())
        stmt = (jobs.update().where(jobs.c.id == pick, claimable)
                .values(state=fresh.target.value, lease_owner=owner,
                        lease_expires_at=now + lease_seconds, lease_token=uuid.uuid4().hex,
                        attempts=jobs.c.attempts + 1, updated_at=now,
                        started_at=sa.func.coalesce(jobs.c.started_at, now))
                .returning(*jobs.c))
        row = await self.write(lambda conn: conn.execute(stmt).first())
        return Job.from_row(row) if row else None

    async def heartbeat(self, job_id: int, owner: str, lease_seconds: float,
                        token: str | None = None) -> bool | None:
        """Renew a lease. None if the lease was lost; True if cancellation was requested."""
        now = time.time()
        stmt = (jobs.update().where(held(job_id, owner, token))
                .values(lease_expires_at=now + lease_seconds, updated_at=now)
                .returning(jobs.c.cancel_requested))
        row = await self.write(lambda conn: conn.execute(stmt).first())
        return None if row is None else bool(row[0])

    async def update_held(self, job_id: int, token: str | None, **values: Any) -> None:
        """Change a job (not its state) only while this claim's lease holds (token None: an
        unfenced write, for jobs run outside a claim); raises LeaseLost otherwise."""
        if token is None:
            await self.update_job(job_id, **values)
            return
        stmt = (jobs.update().where(held(job_id, None, token),
                                    jobs.c.lease_expires_at >= time.time())
                .values(updated_at=time.time(), **no_state(values)))
        if not await self.write(lambda conn: conn.execute(stmt).rowcount):
            raise LeaseLost(f"job {job_id}: this worker's lease is gone")

    async def holds(self, job_id: int, token: str | None) -> bool:
        """Whether this claim's lease is still held and unexpired (checked before a push)."""
        if token is None:
            return True
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(jobs.c.id).where(
                held(job_id, None, token),
                jobs.c.lease_expires_at >= time.time()))).first()
        return row is not None

    async def _end_hold(self, step: Move, job_id: int, owner: str, token: str | None,
                        **values: Any) -> bool:
        """Apply ``step`` to a job this worker holds, its lease cleared; False if the hold
        is gone (the row is left as it is)."""
        stmt = (jobs.update().where(held(job_id, owner, token, step.source_values))
                .values(state=step.target.value, updated_at=time.time(), **NO_LEASE, **values))
        return bool(await self.write(lambda conn: conn.execute(stmt).rowcount))

    async def release(self, job_id: int, owner: str, token: str | None,
                      result: JobRecord | None = None) -> bool:
        """Hand a job this worker holds back to the queue (Event.HAND_BACK: the worker is
        shutting down): its stage and result are kept and the attempt is not counted."""
        values: dict[str, Any] = dict(attempts=jobs.c.attempts - 1)
        if result is not None:
            values["result"] = result
        return await self._end_hold(move(Event.HAND_BACK), job_id, owner, token, **values)

    async def finish(
        self, job_id: int, owner: str, state: State | str, reason: str = "", category: str = "",
        result: JobRecord | None = None, token: str | None = None,
        report_hold: float = 0.0,
    ) -> bool:
        """Record the final state of a job this worker still holds; its report is held for
        ``report_hold`` seconds by this worker, which posts it next."""
        now = time.time()
        values: dict[str, Any] = dict(reason=reason[:4000], category=category, finished_at=now,
                                      report_after=now + report_hold)
        if result is not None:
            values["result"] = result
        step = move(ending(state), only=(State.RUNNING,))
        return await self._end_hold(step, job_id, owner, token, **values)

    async def defer(self, job_id: int, owner: str, until: float, reason: str,
                    result: JobRecord, token: str | None = None, stage: str = "rate-limited",
                    counts: bool = True) -> bool:
        """Put a job this worker holds back in the queue until ``until`` (Event.DEFER: a rate
        limit, GitHub away, checks still running), shown at ``stage``; a deferral that
        ``counts`` adds to the job's deferrals."""
        return await self._end_hold(
            move(Event.DEFER), job_id, owner, token, stage=stage, not_before=until,
            reason=reason, deferrals=jobs.c.deferrals + int(counts),
            attempts=jobs.c.attempts - 1, result=result)
