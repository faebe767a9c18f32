"""The store's database: engines, the one write path, and what its errors mean."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.jobs.schema import make_engine, make_sync_engine
from bot.jobs.store.migrations import upgrade

log = logging.getLogger("handoff.store")
T = TypeVar("T")
DB = TypeVar("DB", bound="Database")


class StoreBusy(Exception):
    """The database stayed locked by another process for longer than the store waits."""


# What a store call raises when the database is away, locked or full for a moment: the errors
# the worker waits out (a lost connection, PostgreSQL restarting, SQLITE_BUSY, ENOSPC; asyncio's
# TimeoutError is an OSError).
STORE_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.SQLAlchemyError, sqlite3.Error, StoreBusy, OSError)


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


def checkpoint(path: str) -> None:
    """A passive WAL checkpoint on its own connection: it never waits for readers or writers."""
    conn = sqlite3.connect(path, timeout=0)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


class Database:
    """The engines every part of the store reads and writes through.

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
    async def open(cls: type[DB], url: str, durable: bool = True, checkpoints: bool = True
                   ) -> DB:
        """The store at ``url``. On SQLite, ``durable=False`` commits without waiting for the
        disk, and ``checkpoints=False`` leaves the WAL to ``keep_wal_short`` (see
        bot/jobs/schema.py)."""
        engine = make_engine(url)
        try:
            await upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
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
