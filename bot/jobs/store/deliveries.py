"""What the store keeps of webhooks: deliveries, signed bodies seen (replays), installations."""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bot.jobs.schema import deliveries, installations, payloads
from bot.jobs.store.database import Database, run_sql

# The webhook path's statements, built once. ON CONFLICT DO NOTHING and RETURNING read the
# same in SQLite and PostgreSQL, and prebuilt statements skip SQLAlchemy's per-call building.
DELIVERY_COLUMNS = ("id", "event", "action", "repo", "outcome", "job_id", "received_at")
SET_OUTCOME = sa.text("UPDATE deliveries SET outcome = :outcome, job_id = :job_id WHERE id = :id")
DELIVERY_ROWS_PER_INSERT = 100  # 700 parameters: well inside SQLite's and PostgreSQL's limits
# A signed body's digest, claimed unless a delivery brought it within the window (a replay).
CLAIM_PAYLOAD = sa.text(
    "INSERT INTO payloads (digest, delivery_id, received_at) VALUES (:d, :id, :now) "
    "ON CONFLICT (digest) DO UPDATE SET delivery_id = excluded.delivery_id, "
    "received_at = excluded.received_at WHERE payloads.received_at < :cutoff "
    "RETURNING delivery_id")
FIRST_PAYLOAD = sa.text("SELECT delivery_id FROM payloads WHERE digest = :d")
# How long a signed body counts as seen: GitHub redelivers for 3 days, GHES for 7.
REPLAY_WINDOW_SECONDS = 7 * 86400


class DuplicateDelivery(Exception):
    """This delivery id was recorded before."""


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


class Deliveries(Database):
    """The deliveries, payloads and installations tables."""

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
