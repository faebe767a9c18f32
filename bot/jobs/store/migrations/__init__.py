"""The store's schema migrations, on Alembic: this package is its environment (env.py and
versions/), run by ``upgrade`` whenever a store is opened, with no alembic.ini.

A database that a newer Handoff has migrated (a revision not in versions/) is refused, so old
code never writes to a schema it does not know. ``alembic`` run in the repository (its
settings are in pyproject.toml) makes new revisions against a database at head
(HANDOFF_DATABASE_URL): ``alembic revision --autogenerate --rev-id 0002 -m "what changed"``;
tests/test_migrations.py fails while the models and the head revision differ.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import __version__
from bot.jobs.store.migrations import baseline

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version"
PG_LOCK = 7134021  # the advisory lock that makes PostgreSQL migrators take turns


class _StepsOnly(logging.Filter):
    """Alembic's log of each step run, without its set-up lines on every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or record.getMessage().startswith("Running ")


_STEPS_ONLY = _StepsOnly()


class NewerSchema(RuntimeError):
    """The database was migrated by a newer Handoff: this code must not write to it."""

    def __init__(self, found: str, head: str) -> None:
        super().__init__(
            f"the database's schema is at revision {found}, which this Handoff ({__version__}, "
            f"schema revision {head}) does not know: a newer Handoff has upgraded it. "
            "Upgrade Handoff to the version that did (or a later one), or restore the backup "
            "taken before that upgrade (handoff restore)")


def config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration for this package, on ``connection`` when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def scripts() -> ScriptDirectory:
    """The revisions this code knows (versions/)."""
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision this code knows."""
    found = scripts().get_current_head()
    assert found is not None
    return found


def current(conn: sa.Connection) -> tuple[str, ...]:
    """The revisions the database is at (none before its first migration)."""
    return MigrationContext.configure(conn).get_current_heads()


def check(conn: sa.Connection) -> tuple[str, ...]:
    """The database's revisions; NewerSchema if a newer Handoff has migrated it. A database
    the hand-written migrations left is at none, whatever Alembic revision sits beside it
    (``pg_restore --clean`` of a backup taken before Alembic keeps the tables the backup
    lacks, ``alembic_version`` among them)."""
    hand = baseline.hand_version(conn)
    if hand is not None and hand > baseline.LAST_HAND_VERSION:
        raise NewerSchema(f"{hand} of the hand-written migrations", head())
    if hand is not None:
        return ()
    known = {rev.revision for rev in scripts().walk_revisions()}
    found = current(conn)
    for revision in found:
        if revision not in known:
            raise NewerSchema(revision, head())
    return found


def upgrade_sync(conn: sa.Connection) -> str:
    """Check the database, then bring it to head on ``conn`` (in its transaction)."""
    found = check(conn)
    if found == (head(),):
        return head()
    if not found and sa.inspect(conn).has_table(VERSION_TABLE):
        conn.execute(sa.text(f"DELETE FROM {VERSION_TABLE}"))  # stale, see check
    command.upgrade(config(conn), "head")
    return head()


async def upgrade(engine: AsyncEngine) -> str:
    """Bring the schema up to date; returns the revision now in force. Processes starting
    together (``serve`` and ``worker``) migrate one after the other."""
    logging.getLogger("alembic.runtime.migration").addFilter(_STEPS_ONLY)
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return await _upgrade(engine)
    # Migrators take turns however long one takes (BEGIN IMMEDIATE gives up after 10 s).
    fd = os.open(f"{database}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        return await _upgrade(engine)
    finally:
        os.close(fd)


async def _upgrade(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:  # most starts: at head already, nothing locked
        if await conn.run_sync(check) == (head(),):
            return head()
    async with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite begins transactions before DML only: begun here, the DDL is in it too,
            # and a revision that fails leaves nothing half done.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({PG_LOCK})"))
        return await conn.run_sync(upgrade_sync)
