"""The durable job store: deliveries, installations and jobs with leases."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.db import (
    ACTIVE_STATES,
    FINAL_STATES,
    deliveries,
    installations,
    jobs,
    make_engine,
    migrate,
)


@dataclass
class Job:
    """A row of the jobs table."""

    id: int
    kind: str
    repo: str
    installation_id: int | None
    issue_number: int
    pr_number: int | None
    branch: str | None
    state: str
    stage: str
    requested_by: str
    trigger: str
    feedback: str
    context: dict[str, Any]
    delivery_id: str | None
    attempts: int
    reason: str
    category: str
    result: dict[str, Any]
    cancel_requested: bool
    reported: bool
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Job:
        return cls(**row._mapping)


class DuplicateDelivery(Exception):
    """This delivery id was recorded before."""


class Store:
    """All reads and writes of Handoff's state go through here."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, url: str) -> Store:
        engine = make_engine(url)
        await migrate(engine)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # deliveries -----------------------------------------------------------------------------

    async def insert_delivery(
        self, conn: AsyncConnection, delivery_id: str, event: str, action: str, repo: str
    ) -> None:
        """Record a delivery inside the caller's transaction; raise if it was seen before."""
        try:
            async with conn.begin_nested():
                await conn.execute(deliveries.insert().values(
                    id=delivery_id, event=event, action=action, repo=repo,
                    received_at=time.time()))
        except IntegrityError as exc:
            raise DuplicateDelivery(delivery_id) from exc

    async def set_delivery_outcome(
        self, conn: AsyncConnection, delivery_id: str, outcome: str, job_id: int | None = None
    ) -> None:
        await conn.execute(deliveries.update().where(deliveries.c.id == delivery_id)
                           .values(outcome=outcome[:2000], job_id=job_id))

    async def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                deliveries.select().where(deliveries.c.id == delivery_id))).first()
        return dict(row._mapping) if row else None

    async def count_deliveries(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(
                sa.select(sa.func.count()).select_from(deliveries))).scalar_one())

    # installations --------------------------------------------------------------------------

    async def record_installation(
        self, conn: AsyncConnection, installation_id: int, account: str, action: str,
        added: tuple[str, ...], removed: tuple[str, ...],
    ) -> None:
        row = (await conn.execute(installations.select().where(
            installations.c.id == installation_id))).first()
        repos = set(row.repositories) if row else set()
        repos = (repos | set(added)) - set(removed)
        state = {"deleted": "deleted", "suspend": "suspended"}.get(action, "active")
        values = dict(account=account, state=state, repositories=sorted(repos),
                      updated_at=time.time())
        if row:
            await conn.execute(installations.update()
                               .where(installations.c.id == installation_id).values(**values))
        else:
            await conn.execute(installations.insert().values(id=installation_id, **values))

    async def installation(self, installation_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(installations.select().where(
                installations.c.id == installation_id))).first()
        return dict(row._mapping) if row else None

    # jobs -----------------------------------------------------------------------------------

    async def insert_job(self, conn: AsyncConnection, **values: Any) -> int | None:
        """Queue a job; None when the issue already has an active one."""
        now = time.time()
        values.setdefault("context", {})
        values.setdefault("result", {})
        try:
            async with conn.begin_nested():
                result = await conn.execute(jobs.insert().values(
                    state="queued", created_at=now, updated_at=now, **values))
        except IntegrityError:
            return None
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def active_job(
        self, conn: AsyncConnection, repo: str, issue_number: int
    ) -> Job | None:
        row = (await conn.execute(jobs.select().where(
            jobs.c.repo == repo, jobs.c.issue_number == issue_number,
            jobs.c.state.in_(ACTIVE_STATES)))).first()
        return Job.from_row(row) if row else None

    async def agent_pr_origin(
        self, conn: AsyncConnection, repo: str, pr_number: int
    ) -> Job | None:
        """The latest job that worked on this PR, if the PR is one of ours."""
        row = (await conn.execute(jobs.select().where(
            jobs.c.repo == repo, jobs.c.pr_number == pr_number).order_by(jobs.c.id.desc())
            .limit(1))).first()
        return Job.from_row(row) if row else None

    async def cancel_jobs(
        self, conn: AsyncConnection, repo: str, issue_number: int, reason: str, only_queued: bool
    ) -> list[int]:
        """Cancel queued jobs at once; ask running ones to stop. Returns the ids touched."""
        now = time.time()
        queued = (await conn.execute(
            jobs.update().where(jobs.c.repo == repo, jobs.c.issue_number == issue_number,
                                jobs.c.state == "queued")
            .values(state="cancelled", reason=reason, category="cancelled", finished_at=now,
                    updated_at=now).returning(jobs.c.id))).scalars().all()
        running: list[int] = []
        if not only_queued:
            running = list((await conn.execute(
                jobs.update().where(jobs.c.repo == repo, jobs.c.issue_number == issue_number,
                                    jobs.c.state == "running")
                .values(cancel_requested=True, reason=reason, updated_at=now)
                .returning(jobs.c.id))).scalars().all())
        return [*queued, *running]

    async def claim(self, owner: str, lease_seconds: float) -> Job | None:
        """Take the oldest queued job, or one whose lease ran out, with a fresh lease."""
        now = time.time()
        claimable = sa.or_(
            jobs.c.state == "queued",
            sa.and_(jobs.c.state == "running", jobs.c.lease_expires_at < now),
        )
        pick = (sa.select(jobs.c.id).where(claimable).order_by(jobs.c.id).limit(1)
                .with_for_update(skip_locked=True).scalar_subquery())
        stmt = (jobs.update().where(jobs.c.id == pick, claimable)
                .values(state="running", lease_owner=owner, lease_expires_at=now + lease_seconds,
                        attempts=jobs.c.attempts + 1, updated_at=now,
                        started_at=sa.func.coalesce(jobs.c.started_at, now))
                .returning(*jobs.c))
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return Job.from_row(row) if row else None

    async def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> bool | None:
        """Renew a lease. None if the lease was lost; True if cancellation was requested."""
        now = time.time()
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.lease_owner == owner,
                                    jobs.c.state == "running")
                .values(lease_expires_at=now + lease_seconds, updated_at=now)
                .returning(jobs.c.cancel_requested))).first()
        return None if row is None else bool(row[0])

    async def update_job(self, job_id: int, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(jobs.update().where(jobs.c.id == job_id)
                               .values(updated_at=time.time(), **values))

    async def finish(
        self, job_id: int, owner: str, state: str, reason: str = "", category: str = "",
        result: dict[str, Any] | None = None,
    ) -> bool:
        """Record the final state of a job this worker still holds."""
        now = time.time()
        values: dict[str, Any] = dict(state=state, reason=reason[:4000], category=category,
                                      finished_at=now, updated_at=now, lease_owner=None,
                                      lease_expires_at=None)
        if result is not None:
            values["result"] = result
        async with self.engine.begin() as conn:
            res = await conn.execute(jobs.update().where(
                jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.state == "running")
                .values(**values))
        return bool(res.rowcount)

    async def unreported(self, limit: int = 20) -> list[Job]:
        """Final jobs whose outcome has not reached GitHub yet."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(jobs.select().where(
                jobs.c.state.in_(FINAL_STATES), jobs.c.reported.is_(False))
                .order_by(jobs.c.id).limit(limit))).all()
        return [Job.from_row(r) for r in rows]

    async def get_job(self, job_id: int) -> Job | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(jobs.select().where(jobs.c.id == job_id))).first()
        return Job.from_row(row) if row else None

    async def list_jobs(self, limit: int = 20, repo: str | None = None) -> list[Job]:
        query = jobs.select().order_by(jobs.c.id.desc()).limit(limit)
        if repo:
            query = query.where(jobs.c.repo == repo)
        async with self.engine.connect() as conn:
            return [Job.from_row(r) for r in (await conn.execute(query)).all()]

    async def queue_position(self, job_id: int) -> int:
        """How many queued jobs are ahead of this one, plus one."""
        async with self.engine.connect() as conn:
            ahead = (await conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
                jobs.c.state == "queued", jobs.c.id < job_id))).scalar_one()
        return int(ahead) + 1
