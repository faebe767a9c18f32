"""The durable job store: deliveries, installations and jobs with leases."""

from __future__ import annotations

import asyncio
import errno
import functools
import itertools
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.jobs.record import JobRecord
from bot.jobs.schema import (
    deliveries,
    installations,
    jobs,
    make_engine,
    make_sync_engine,
    migrate,
    payloads,
    requests,
)
from bot.jobs.states import ACTIVE_STATES, FINAL_STATES

log = logging.getLogger("handoff.store")
T = TypeVar("T")

# The webhook path's statements, built once. ON CONFLICT DO NOTHING and RETURNING read the
# same in SQLite and PostgreSQL, and prebuilt statements skip SQLAlchemy's per-call building.
DELIVERY_COLUMNS = ("id", "event", "action", "repo", "outcome", "job_id", "received_at")
SET_OUTCOME = sa.text("UPDATE deliveries SET outcome = :outcome, job_id = :job_id WHERE id = :id")
JOB_INSERT_COLUMNS = ("kind", "repo", "installation_id", "issue_number", "pr_number", "branch",
                      "requested_by", "trigger", "feedback", "context", "delivery_id", "result",
                      "created_at", "updated_at")
JOB_JSON_COLUMNS = ("context", "result")
ACTIVE_JOB = sa.text("SELECT id, state FROM jobs WHERE repo = :repo AND issue_number = "
                     f":issue_number AND state IN ({', '.join(repr(s) for s in ACTIVE_STATES)})")
INSERT_JOB = sa.text(
    f"INSERT INTO jobs ({', '.join(JOB_INSERT_COLUMNS)}, state) "
    f"VALUES ({', '.join(':' + c for c in JOB_INSERT_COLUMNS)}, 'queued') "
    "ON CONFLICT DO NOTHING RETURNING id"
).bindparams(*(sa.bindparam(c, type_=sa.JSON) for c in JOB_JSON_COLUMNS))
DELIVERY_ROWS_PER_INSERT = 100  # 700 parameters: well inside SQLite's and PostgreSQL's limits
# A signed body's digest, claimed unless a delivery brought it within the window (a replay).
CLAIM_PAYLOAD = sa.text(
    "INSERT INTO payloads (digest, delivery_id, received_at) VALUES (:d, :id, :now) "
    "ON CONFLICT (digest) DO UPDATE SET delivery_id = excluded.delivery_id, "
    "received_at = excluded.received_at WHERE payloads.received_at < :cutoff "
    "RETURNING delivery_id")
FIRST_PAYLOAD = sa.text("SELECT delivery_id FROM payloads WHERE digest = :d")
# An issue edit as kept for its job: GitHub's own limits on a title and a body.
EDIT_TITLE_CHARS, EDIT_BODY_CHARS = 256, 65536
# How long a signed body counts as seen: GitHub redelivers for 3 days, GHES for 7.
REPLAY_WINDOW_SECONDS = 7 * 86400


@dataclass(frozen=True)
class RowsInsert:
    """One INSERT of many deliveries: named parameters for SQLAlchemy, and the same statement
    with positional ones for SQLite's driver, which binds those far faster."""

    named: sa.TextClause
    names: tuple[str, ...]
    positional: str


@functools.lru_cache(maxsize=DELIVERY_ROWS_PER_INSERT)
def insert_deliveries_sql(count: int) -> RowsInsert:
    head = f"INSERT INTO deliveries ({', '.join(DELIVERY_COLUMNS)}) VALUES "
    tail = " ON CONFLICT DO NOTHING RETURNING id"
    names = tuple(f"{c}{i}" for i in range(count) for c in DELIVERY_COLUMNS)
    rows = ", ".join("(" + ", ".join(f":{c}{i}" for c in DELIVERY_COLUMNS) + ")"
                     for i in range(count))
    marks = ", ".join(["(" + ", ".join("?" * len(DELIVERY_COLUMNS)) + ")"] * count)
    return RowsInsert(sa.text(head + rows + tail), names, head + marks + tail)


def run_sql(conn: sa.Connection, stmt: sa.TextClause, params: dict[str, Any],
            json_keys: tuple[str, ...] = ()) -> tuple[int, list[tuple[Any, ...]]]:
    """Run a prebuilt statement; returns the row count and any rows.

    On SQLite the text goes straight to the driver (it reads the same :named parameters), which
    is several times cheaper per statement than SQLAlchemy's execution path; ``json_keys`` name
    the parameters the driver needs encoded.
    """
    if conn.dialect.name == "sqlite":
        for key in json_keys:
            params[key] = json.dumps(params[key])
        cursor = conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
            stmt.text, params)
        rows = cursor.fetchall()
        return cursor.rowcount, rows
    result = conn.execute(stmt, params)
    rows = [tuple(r) for r in result.fetchall()] if result.returns_rows else []
    return result.rowcount, rows


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
    result: JobRecord
    cancel_requested: bool
    cancel_by: str | None
    reported: bool
    not_before: float | None
    deferrals: int
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    lease_token: str | None = None
    report_after: float | None = None
    report_attempts: int = 0
    report_error: str = ""
    unreportable: bool = False
    cancel_reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.result, JobRecord):  # a stored dict, or one a test made
            self.result = JobRecord.load(self.result)

    @property
    def target(self) -> int:
        """Where the job speaks on GitHub: its agent PR for iterations, else the issue."""
        return self.pr_number if self.kind != "implement" and self.pr_number else \
            self.issue_number

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Job:
        return cls(**row._mapping)


class DuplicateDelivery(Exception):
    """This delivery id was recorded before."""


class LeaseLost(Exception):
    """This worker's lease on the job is gone (it ran out and another worker took the job, or
    the job was handed back): the write was refused and the job must stop."""


class StoreBusy(Exception):
    """The database stayed locked by another process for longer than the store waits."""


def is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY), raised through SQLAlchemy or straight
    from the driver (the webhook's inserts)."""
    return isinstance(exc, sa.exc.OperationalError | sqlite3.OperationalError) and \
        "is locked" in str(exc)


def is_full(exc: BaseException) -> bool:
    """The disk under the database is full (SQLite's SQLITE_FULL, PostgreSQL's "could not
    extend file", ENOSPC): a write that can succeed once there is space again."""
    text = str(exc).lower()
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or \
        any(words in text for words in ("database or disk is full", "no space left on device",
                                        "out of diskspace", "could not extend file"))


class Store:
    """All reads and writes of Handoff's state go through here.

    On SQLite every write of the process goes through ``write``: one connection, used on the
    event loop, each transaction begun and committed without an ``await`` in between, so no
    two writes of one process ever wait on each other. Reads use the async engine's
    connections, which in WAL mode neither wait for the writer nor hold it up.
    """

    busy_seconds = 5.0  # how long a write waits out another process's lock (under GitHub's 10 s)

    def __init__(self, engine: AsyncEngine, sync_engine: sa.Engine | None = None) -> None:
        self.engine = engine
        self.sync_engine = sync_engine

    @classmethod
    async def open(cls, url: str, durable: bool = True, checkpoints: bool = True) -> Store:
        """The store at ``url``. On SQLite, ``durable=False`` commits without waiting for the
        disk, and ``checkpoints=False`` leaves the WAL to ``keep_wal_short`` (see
        bot/jobs/schema.py)."""
        engine = make_engine(url)
        await migrate(engine)
        return cls(engine, make_sync_engine(url, durable, checkpoints))

    async def close(self) -> None:
        await self.engine.dispose()
        if self.sync_engine is not None:
            self.sync_engine.dispose()

    async def write(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn`` in one transaction; ``fn`` must not keep state between calls, as a busy
        database makes it run again.

        On SQLite it runs right here with the plain driver: a batch of webhook writes takes a
        couple of milliseconds, less than handing it to a thread costs under the GIL
        (bench/ingest.py shows the difference). The connection waits at most
        a few milliseconds for a lock held by another process; then the write is tried again
        after an asyncio sleep, up to ``busy_seconds``, and StoreBusy is raised.
        """
        if self.sync_engine is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)
        deadline = time.monotonic() + self.busy_seconds
        delay = 0.005
        while True:
            try:
                return self._write_sync(fn)
            except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
                if not is_busy(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise StoreBusy(f"the database stayed locked for {self.busy_seconds:g} s "
                                    "(another process writes to it)") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _write_sync(self, fn: Callable[[sa.Connection], T]) -> T:
        assert self.sync_engine is not None
        with self.sync_engine.begin() as conn:
            return fn(conn)

    async def keep_wal_short(self, every: float = 5.0) -> None:
        """On SQLite, copy the write-ahead log into the database now and then, in a thread,
        so the writer on the event loop never does it (its automatic checkpoints are off)."""
        if self.sync_engine is None or self.sync_engine.url.database in (None, "", ":memory:"):
            return
        path = str(self.sync_engine.url.database)
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(checkpoint, path)
            except sqlite3.Error as exc:  # busy or gone for a moment: next time
                log.warning("WAL checkpoint skipped: %s", exc)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # deliveries -----------------------------------------------------------------------------

    def insert_delivery(
        self, conn: sa.Connection, delivery_id: str, event: str, action: str, repo: str
    ) -> None:
        """Record a delivery inside the caller's transaction; raise if it was seen before."""
        row = (delivery_id, event, action, repo, "", None, time.time())
        if not self.insert_deliveries(conn, [row]):
            raise DuplicateDelivery(delivery_id)

    def insert_deliveries(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> set[str]:
        """Record deliveries whose outcome is already known (rows of DELIVERY_COLUMNS), a
        statement per hundred; returns the ids that were new (the rest were seen before)."""
        new: set[str] = set()
        for start in range(0, len(rows), DELIVERY_ROWS_PER_INSERT):
            chunk = rows[start:start + DELIVERY_ROWS_PER_INSERT]
            sql = insert_deliveries_sql(len(chunk))
            if conn.dialect.name == "sqlite":
                inserted = conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                    sql.positional, list(itertools.chain(*chunk))).fetchall()
            else:
                params = dict(zip(sql.names, itertools.chain(*chunk), strict=True))
                _, inserted = run_sql(conn, sql.named, params)
            new.update(r[0] for r in inserted)
        return new

    def set_delivery_outcome(
        self, conn: sa.Connection, delivery_id: str, outcome: str, job_id: int | None = None
    ) -> None:
        run_sql(conn, SET_OUTCOME, {"id": delivery_id, "outcome": outcome[:2000],
                                    "job_id": job_id})

    async def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                deliveries.select().where(deliveries.c.id == delivery_id))).first()
        return dict(row._mapping) if row else None

    async def count_deliveries(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(
                sa.select(sa.func.count()).select_from(deliveries))).scalar_one())

    async def prune_deliveries(self, older_than_days: float, chunk: int = 1000) -> int:
        """Forget deliveries received before the cutoff that started no job; returns how many.

        GitHub redelivers for three days at most (seven on GHES), so an older delivery id
        cannot come back; those of jobs stay as long as their jobs do. Chunks keep each write
        short.
        """
        cutoff = time.time() - older_than_days * 86400
        old = (sa.select(deliveries.c.id)
               .where(deliveries.c.received_at < cutoff, deliveries.c.job_id.is_(None))
               .limit(chunk).scalar_subquery())
        delete = deliveries.delete().where(deliveries.c.id.in_(old))
        # A body digest matters only within the redelivery window.
        forget = payloads.delete().where(
            payloads.c.received_at < time.time() - REPLAY_WINDOW_SECONDS)
        await self.write(lambda conn: conn.execute(forget))
        removed = 0
        while True:
            count = await self.write(lambda conn: conn.execute(delete).rowcount)
            removed += count
            if count < chunk:
                return removed

    # installations --------------------------------------------------------------------------

    def record_installation(
        self, conn: sa.Connection, installation_id: int, account: str, action: str,
        added: tuple[str, ...], removed: tuple[str, ...],
    ) -> None:
        row = conn.execute(installations.select().where(
            installations.c.id == installation_id)).first()
        repos = set(row.repositories) if row else set()
        repos = (repos | set(added)) - set(removed)
        state = {"deleted": "deleted", "suspend": "suspended"}.get(action, "active")
        values = dict(account=account, state=state, repositories=sorted(repos),
                      updated_at=time.time())
        if row:
            conn.execute(installations.update()
                         .where(installations.c.id == installation_id).values(**values))
        else:
            conn.execute(installations.insert().values(id=installation_id, **values))

    async def installation(self, installation_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(installations.select().where(
                installations.c.id == installation_id))).first()
        return dict(row._mapping) if row else None

    # jobs -----------------------------------------------------------------------------------

    def insert_job(self, conn: sa.Connection, **values: Any) -> int | None:
        """Queue a job; None when the issue already has an active one."""
        now = time.time()
        params: dict[str, Any] = {name: None for name in JOB_INSERT_COLUMNS}
        params.update(context={}, result={}, trigger="", feedback="", created_at=now,
                      updated_at=now)
        params.update(values)
        # The unique index on active jobs turns a second trigger into a no-op insert.
        _, rows = run_sql(conn, INSERT_JOB, params, JOB_JSON_COLUMNS)
        return int(rows[0][0]) if rows else None

    def active_job(
        self, conn: sa.Connection, repo: str, issue_number: int
    ) -> tuple[int, str] | None:
        """The id and state of the issue's queued or running job, if any."""
        _, rows = run_sql(conn, ACTIVE_JOB, {"repo": repo, "issue_number": issue_number})
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def agent_pr_origin(
        self, conn: sa.Connection, repo: str, pr_number: int
    ) -> Job | None:
        """The latest job that worked on this PR, if the PR is one of ours."""
        row = conn.execute(jobs.select().where(
            jobs.c.repo == repo, jobs.c.pr_number == pr_number).order_by(jobs.c.id.desc())
            .limit(1)).first()
        return Job.from_row(row) if row else None

    def cancel_jobs(
        self, conn: sa.Connection, repo: str, issue_number: int, reason: str, only_queued: bool
    ) -> list[int]:
        """Cancel queued jobs at once; ask running ones to stop. Returns the ids touched."""
        now = time.time()
        queued = conn.execute(
            jobs.update().where(jobs.c.repo == repo, jobs.c.issue_number == issue_number,
                                jobs.c.state == "queued")
            .values(state="cancelled", reason=reason, category="cancelled", finished_at=now,
                    updated_at=now).returning(jobs.c.id)).scalars().all()
        running: list[int] = []
        if not only_queued:
            running = list(conn.execute(
                jobs.update().where(jobs.c.repo == repo, jobs.c.issue_number == issue_number,
                                    jobs.c.state == "running")
                .values(cancel_requested=True, reason=reason, updated_at=now)
                .returning(jobs.c.id)).scalars().all())
        return [*queued, *running]

    def record_edit(self, conn: sa.Connection, repo: str, issue_number: int,
                    edit: dict[str, str]) -> int | None:
        """Note an edit of the issue on its active job: the latest edit of each editor (cut to
        GitHub's own limits) and how many they made, so an edit flood cannot grow the row.
        Returns the job's id, or None."""
        row = conn.execute(sa.select(jobs.c.id, jobs.c.context).where(
            jobs.c.repo == repo, jobs.c.issue_number == issue_number,
            jobs.c.state.in_(("queued", "running")))).first()
        if row is None:
            return None
        context = dict(row.context or {})
        earlier = [e for e in context.get("edits", []) if e.get("by") == edit["by"]]
        count = sum(int(e.get("count", 1)) for e in earlier) + 1
        # The editor's entry moves to the end: edits apply in order, the latest writer's last.
        context["edits"] = [*(e for e in context.get("edits", []) if e.get("by") != edit["by"]),
                            {"by": edit["by"], "title": edit["title"][:EDIT_TITLE_CHARS],
                             "body": edit["body"][:EDIT_BODY_CHARS], "count": count}]
        conn.execute(jobs.update().where(jobs.c.id == row.id).values(context=context))
        return int(row.id)

    def replayed(self, conn: sa.Connection, digest: str, delivery_id: str) -> str | None:
        """Note a signed body that asks for a write; if the same body came under another
        delivery id within the redelivery window, that id (a replay), else None."""
        now = time.time()
        _, rows = run_sql(conn, CLAIM_PAYLOAD, {"d": digest, "id": delivery_id, "now": now,
                                                "cutoff": now - REPLAY_WINDOW_SECONDS})
        if rows:
            return None
        _, rows = run_sql(conn, FIRST_PAYLOAD, {"d": digest})
        return str(rows[0][0]) if rows else "?"

    def last_job_digest(self, conn: sa.Connection, repo: str, issue_number: int) -> str | None:
        """The body digest the issue's latest job started from, if it has one."""
        context = conn.execute(sa.select(jobs.c.context).where(
            jobs.c.repo == repo, jobs.c.issue_number == issue_number)
            .order_by(jobs.c.id.desc()).limit(1)).scalar()
        return (context or {}).get("payload_sha256")

    def add_request(self, conn: sa.Connection, job_id: int, repo: str, number: int, kind: str,
                    requested_by: str, comment_id: int | None) -> None:
        """Note a trigger or command that reached a job under way, to be answered on GitHub."""
        conn.execute(requests.insert().values(
            job_id=job_id, repo=repo, number=number, kind=kind, requested_by=requested_by,
            comment_id=comment_id, created_at=time.time()))

    async def unanswered_requests(self, limit: int = 50) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(requests.select().where(requests.c.answered.is_(False))
                                       .order_by(requests.c.id).limit(limit))).all()
        return [dict(r._mapping) for r in rows]

    async def claim_request(self, request_id: int) -> bool:
        """Take a request to answer; False if another worker took it first."""
        stmt = (requests.update().where(requests.c.id == request_id,
                                        requests.c.answered.is_(False)).values(answered=True))
        return bool(await self.write(lambda conn: conn.execute(stmt).rowcount))

    async def claim_reply(self, scope: str, login: str) -> bool:
        """Whether Handoff may answer ``login`` about ``scope`` (``job:12``): True the first
        time only, whichever worker asks."""
        stmt = sa.text("INSERT INTO replies (scope, login, created_at) VALUES (:scope, :login, "
                       ":now) ON CONFLICT DO NOTHING RETURNING login")
        params = {"scope": scope[:320], "login": login, "now": time.time()}
        return await self.write(lambda conn: conn.execute(stmt, params).first() is not None)

    def request_cancel(self, conn: sa.Connection, repo: str, issue_number: int, by: str,
                       reason: str = "", states: tuple[str, ...] = ("queued", "running")
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
                jobs.c.cancel_by.is_not(None), jobs.c.state.in_(("queued", "running")))
                .order_by(jobs.c.id))).all()
        return [Job.from_row(r) for r in rows]

    async def settle_cancel(self, job: Job, allowed: bool) -> None:
        """Carry out a checked /cancel (a queued job ends, a running one is asked to stop),
        or drop a refused one."""
        now = time.time()
        reason = job.cancel_reason or f"/cancel by @{job.cancel_by}"

        def settle(conn: sa.Connection) -> None:
            conn.execute(jobs.update().where(jobs.c.id == job.id)
                         .values(cancel_by=None, cancel_reason=None, updated_at=now))
            if not allowed:
                return
            conn.execute(jobs.update().where(jobs.c.id == job.id, jobs.c.state == "queued")
                         .values(state="cancelled", reason=reason, category="cancelled",
                                 finished_at=now))
            conn.execute(jobs.update().where(jobs.c.id == job.id, jobs.c.state == "running")
                         .values(cancel_requested=True, reason=reason))

        await self.write(settle)

    async def claim(self, owner: str, lease_seconds: float,
                    exclude: Collection[int] = ()) -> Job | None:
        """Take the oldest queued job, or one whose lease ran out, with a fresh lease; never
        one of ``exclude`` (the jobs this worker runs already)."""
        now = time.time()
        claimable = sa.or_(
            sa.and_(jobs.c.state == "queued",
                    sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now)),
            sa.and_(jobs.c.state == "running", jobs.c.lease_expires_at < now),
        )
        if exclude:
            claimable = sa.and_(claimable, jobs.c.id.notin_(list(exclude)))
        pick = (sa.select(jobs.c.id).where(claimable).order_by(jobs.c.id).limit(1)
                .with_for_update(skip_locked=True).scalar_subquery())
        stmt = (jobs.update().where(jobs.c.id == pick, claimable)
                .values(state="running", lease_owner=owner, lease_expires_at=now + lease_seconds,
                        lease_token=uuid.uuid4().hex, attempts=jobs.c.attempts + 1, updated_at=now,
                        started_at=sa.func.coalesce(jobs.c.started_at, now))
                .returning(*jobs.c))
        row = await self.write(lambda conn: conn.execute(stmt).first())
        return Job.from_row(row) if row else None

    @staticmethod
    def _held(job_id: int, owner: str | None, token: str | None) -> sa.ColumnElement[bool]:
        """The job is running under this lease (the owner's, and this claim's token)."""
        where = sa.and_(jobs.c.id == job_id, jobs.c.state == "running")
        if owner is not None:
            where = sa.and_(where, jobs.c.lease_owner == owner)
        if token is not None:
            where = sa.and_(where, jobs.c.lease_token == token)
        return where

    async def heartbeat(self, job_id: int, owner: str, lease_seconds: float,
                        token: str | None = None) -> bool | None:
        """Renew a lease. None if the lease was lost; True if cancellation was requested."""
        now = time.time()
        stmt = (jobs.update().where(self._held(job_id, owner, token))
                .values(lease_expires_at=now + lease_seconds, updated_at=now)
                .returning(jobs.c.cancel_requested))
        row = await self.write(lambda conn: conn.execute(stmt).first())
        return None if row is None else bool(row[0])

    async def update_queued(self, job_id: int, unchanged_since: float | None = None,
                            **values: Any) -> bool:
        """Change a job only while it is still queued (and, given ``unchanged_since``, nobody
        changed it since it was read: one worker wins); False otherwise."""
        stmt = (jobs.update().where(jobs.c.id == job_id, jobs.c.state == "queued",
                                    *([jobs.c.updated_at == unchanged_since]
                                      if unchanged_since is not None else []))
                .values(updated_at=time.time(), **values))
        return bool(await self.write(lambda conn: conn.execute(stmt).rowcount))

    async def update_job(self, job_id: int, **values: Any) -> None:
        stmt = jobs.update().where(jobs.c.id == job_id).values(updated_at=time.time(), **values)
        await self.write(lambda conn: conn.execute(stmt))

    async def update_held(self, job_id: int, token: str | None, **values: Any) -> None:
        """Change a job only while this claim's lease holds (token None: an unfenced write,
        for jobs run outside a claim); raises LeaseLost otherwise."""
        if token is None:
            await self.update_job(job_id, **values)
            return
        stmt = (jobs.update().where(self._held(job_id, None, token),
                                    jobs.c.lease_expires_at >= time.time())
                .values(updated_at=time.time(), **values))
        if not await self.write(lambda conn: conn.execute(stmt).rowcount):
            raise LeaseLost(f"job {job_id}: this worker's lease is gone")

    async def holds(self, job_id: int, token: str | None) -> bool:
        """Whether this claim's lease is still held and unexpired (checked before a push)."""
        if token is None:
            return True
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(jobs.c.id).where(
                self._held(job_id, None, token),
                jobs.c.lease_expires_at >= time.time()))).first()
        return row is not None

    async def release(self, job_id: int, owner: str, token: str | None,
                      result: JobRecord | None = None) -> bool:
        """Hand a job this worker holds back to the queue (the worker is shutting down): its
        stage and result are kept and the attempt is not counted."""
        values: dict[str, Any] = dict(state="queued", lease_owner=None, lease_expires_at=None,
                                      lease_token=None, attempts=jobs.c.attempts - 1,
                                      updated_at=time.time())
        if result is not None:
            values["result"] = result
        stmt = jobs.update().where(self._held(job_id, owner, token)).values(**values)
        return bool(await self.write(lambda conn: conn.execute(stmt).rowcount))

    # reports --------------------------------------------------------------------------------

    def _reportable(self, now: float) -> sa.ColumnElement[bool]:
        return sa.and_(jobs.c.state.in_(FINAL_STATES), jobs.c.reported.is_(False),
                       jobs.c.unreportable.is_(False),
                       sa.or_(jobs.c.report_after.is_(None), jobs.c.report_after <= now))

    async def claim_report(self, hold_seconds: float, exclude: Collection[int] = ()
                           ) -> Job | None:
        """Take the unreported job that has waited longest (never reported first, then by when
        its back-off ends), held for ``hold_seconds`` so no other worker posts it meanwhile."""
        now = time.time()
        reportable = self._reportable(now)
        if exclude:
            reportable = sa.and_(reportable, jobs.c.id.notin_(list(exclude)))
        pick = (sa.select(jobs.c.id).where(reportable)
                .order_by(sa.func.coalesce(jobs.c.report_after, 0), jobs.c.id).limit(1)
                .with_for_update(skip_locked=True).scalar_subquery())
        stmt = (jobs.update().where(jobs.c.id == pick, reportable)
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
                jobs.c.category == "not-permitted", jobs.c.reported.is_(True)).limit(1))).first()
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

    async def finish(
        self, job_id: int, owner: str, state: str, reason: str = "", category: str = "",
        result: JobRecord | None = None, token: str | None = None,
        report_hold: float = 0.0,
    ) -> bool:
        """Record the final state of a job this worker still holds; its report is held for
        ``report_hold`` seconds by this worker, which posts it next."""
        now = time.time()
        values: dict[str, Any] = dict(state=state, reason=reason[:4000], category=category,
                                      finished_at=now, updated_at=now, lease_owner=None,
                                      lease_expires_at=None, lease_token=None,
                                      report_after=now + report_hold)
        if result is not None:
            values["result"] = result
        stmt = jobs.update().where(self._held(job_id, owner, token)).values(**values)
        return bool(await self.write(lambda conn: conn.execute(stmt).rowcount))

    async def defer(self, job_id: int, owner: str, until: float, reason: str,
                    result: JobRecord, token: str | None = None, stage: str = "rate-limited"
                    ) -> bool:
        """Put a job this worker holds back in the queue until ``until`` (a rate limit, or
        GitHub away), shown at ``stage``."""
        stmt = jobs.update().where(self._held(job_id, owner, token)).values(
                 state="queued", stage=stage, not_before=until, reason=reason,
                 deferrals=jobs.c.deferrals + 1, attempts=jobs.c.attempts - 1,
                 lease_owner=None, lease_expires_at=None, lease_token=None, result=result,
                 updated_at=time.time())
        return bool(await self.write(lambda conn: conn.execute(stmt).rowcount))

    async def queued(self, limit: int = 50) -> list[Job]:
        """Queued jobs, oldest first."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(jobs.select().where(jobs.c.state == "queued")
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


def checkpoint(path: str) -> None:
    """A passive WAL checkpoint on its own connection: it never waits for readers or writers."""
    conn = sqlite3.connect(path, timeout=0)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()
