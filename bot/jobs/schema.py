"""The database: tables and engine set-up, for SQLite and PostgreSQL alike (the migrations
that bring a database to these tables: bot/jobs/store/migrations)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.jobs.record import JobRecord
from bot.jobs.states import ACTIVE_STATES

metadata = sa.MetaData()


class RecordJSON(sa.types.TypeDecorator[JobRecord]):
    """The job record column: stored as JSON, read back as a ``JobRecord``."""

    impl = sa.JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return value.dump() if isinstance(value, JobRecord) else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> JobRecord:
        return JobRecord.load(value)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False, server_default=""),
    sa.Column("repo", sa.String(255), nullable=False, server_default=""),
    sa.Column("outcome", sa.Text, nullable=False, server_default=""),
    sa.Column("job_id", sa.Integer, nullable=True),
    sa.Column("received_at", sa.Float, nullable=False),
)

installations = sa.Table(
    "installations", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("account", sa.String(255), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("repositories", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("installation_id", sa.BigInteger, nullable=True),
    sa.Column("issue_number", sa.Integer, nullable=False),
    sa.Column("pr_number", sa.Integer, nullable=True),
    sa.Column("branch", sa.String(255), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False, server_default=""),
    sa.Column("requested_by", sa.String(255), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False, server_default=""),
    sa.Column("feedback", sa.Text, nullable=False, server_default=""),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("delivery_id", sa.String(64), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("category", sa.String(32), nullable=False, server_default=""),
    sa.Column("result", RecordJSON, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    # Who asked to /cancel, until their permission is checked; the cancel waits for that.
    sa.Column("cancel_by", sa.String(255), nullable=True),
    # What that cancel is (a /cancel, or closing the issue), said in the job's reason.
    sa.Column("cancel_reason", sa.Text, nullable=True),
    # False until the job's final state has been posted on GitHub.
    sa.Column("reported", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    # A fresh token per claim: every write a worker makes for the job, and every push, checks
    # it, so a worker that lost its lease changes nothing (fencing).
    sa.Column("lease_token", sa.String(32), nullable=True),
    # The final report, claimed like a job: nobody posts it before ``report_after`` (another
    # worker is posting it, or the last try failed and it backs off); a report that can never
    # be posted (the App lost access, the repository is archived) is marked ``unreportable``.
    sa.Column("report_after", sa.Float, nullable=True),
    sa.Column("report_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("report_error", sa.Text, nullable=False, server_default=""),
    sa.Column("unreportable", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("not_before", sa.Float, nullable=True),
    sa.Column("deferrals", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
)

# One active job per issue, enforced by the database so that concurrent deliveries cannot race.
ACTIVE_WHERE = jobs.c.state.in_(ACTIVE_STATES)
sa.Index(
    "one_active_job_per_issue", jobs.c.repo, jobs.c.issue_number, unique=True,
    sqlite_where=ACTIVE_WHERE, postgresql_where=ACTIVE_WHERE,
)
sa.Index("jobs_claimable", jobs.c.state, jobs.c.id)
sa.Index("jobs_pr", jobs.c.repo, jobs.c.pr_number)
# An issue's latest job (the replay check on every delivery, the CI gate): without it the
# newest-first scan reads every row of a repository without a job on that issue.
sa.Index("jobs_issue", jobs.c.repo, jobs.c.issue_number, jobs.c.id)

# Commands and triggers that reached a job already under way (a second /agent or label, a
# /cancel): each gets an answer on GitHub from a worker, once.
requests = sa.Table(
    "requests", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),  # where it was asked: issue or PR
    sa.Column("kind", sa.String(16), nullable=False),  # trigger | cancel
    sa.Column("requested_by", sa.String(255), nullable=False),
    sa.Column("comment_id", sa.BigInteger, nullable=True),
    sa.Column("answered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("requests_unanswered", requests.c.answered, requests.c.id)

# Monthly caps an operator sets (``handoff budgets``): per organisation (the repository's
# owner), repository (owner/name) or person (the login who asked), in dollars and in jobs.
budgets = sa.Table(
    "budgets", metadata,
    sa.Column("scope", sa.String(16), primary_key=True),  # org | repo | person
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("dollars", sa.Float, nullable=True),
    sa.Column("jobs", sa.Integer, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# People Handoff has answered, by what about ("job:12"): each hears
# from it once there (outsiders who comment again and again get no more replies).
replies = sa.Table(
    "replies", metadata,
    sa.Column("scope", sa.String(320), primary_key=True),
    sa.Column("login", sa.String(255), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

# The digest of each signed body that asked for a write: the same body under a new delivery
# id (a captured delivery sent again; neither header is signed) is a replay, not new work.
payloads = sa.Table(
    "payloads", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("delivery_id", sa.String(64), nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)

# Secrets setup steps are given by name (``handoff secrets``): per installation (its id),
# organisation (the owner's login) or repository (owner/name), lower case; ``value`` is
# sealed with the operator's key (bot/jobs/secrets.py), never stored in plain.
secrets = sa.Table(
    "secrets", metadata,
    sa.Column("scope", sa.String(16), primary_key=True),  # installation | org | repo
    sa.Column("target", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Dashboard sign-ins (bot/dashboard/sessions.py), shared by every web replica: a row a
# session, keyed by the SHA-256 of the id the browser's cookie holds (the database never
# holds a usable id); the person's GitHub token sealed with a key derived from the App's
# client secret, which the database does not hold either.
sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("login", sa.String(255), nullable=False),
    sa.Column("token", sa.Text, nullable=False),
    sa.Column("repos", sa.JSON, nullable=False),
    sa.Column("repos_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Readers (aiosqlite, in a thread) may wait this long; in WAL mode they never wait on writes.
READ_BUSY_MS = 10_000
# The one writing connection runs on the event loop, so it must never wait long there: past
# this it gives up and Store.write retries after an asyncio sleep. Only another process can
# hold the write lock, since in one process all writes go through that one connection.
WRITE_BUSY_MS = 20


def _sqlite_pragmas(busy_ms: int, durable: bool = True, autocheckpoint: bool = True
                    ) -> Callable[[object, object], None]:
    def on_connect(dbapi_conn: object, _record: object) -> None:
        cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a 202 means the delivery is on disk, so not even a power cut loses what was
        # acknowledged (WAL with NORMAL may roll back the last commits). A worker process's
        # writes (stages, heartbeats) are NORMAL: they do not hold the write lock through an
        # fsync, and the receiver's next commit syncs them too; a power cut can only send a
        # job back to an earlier stage.
        cursor.execute("PRAGMA synchronous=" + ("FULL" if durable else "NORMAL"))
        if not autocheckpoint:
            # Checkpoints copy the WAL into the database and fsync it: on the receiver's
            # event loop that held every webhook up. Store.keep_wal_short runs them in a thread.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        # 32 MB of page cache instead of SQLite's 2 MB: the delivery index of a busy install
        # outgrows 2 MB, and each page read back from the OS costs a system call.
        cursor.execute("PRAGMA cache_size=-32768")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
    return on_connect


def make_engine(url: str) -> AsyncEngine:
    """An engine for a SQLite or PostgreSQL URL. On SQLite it is for reads (and migrations):
    every write in the process goes through the one connection of make_sync_engine."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": READ_BUSY_MS / 1000})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(READ_BUSY_MS))
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def make_sync_engine(url: str, durable: bool = True, autocheckpoint: bool = True
                     ) -> sa.Engine | None:
    """For SQLite, the plain-driver engine of all the process's writes, run on the event loop
    (bot/jobs/store.py: Store.write) with one connection; None otherwise."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    engine = sa.create_engine(parsed.set(drivername="sqlite"), pool_size=1, max_overflow=0,
                              connect_args={"timeout": WRITE_BUSY_MS / 1000})
    event.listen(engine, "connect", _sqlite_pragmas(WRITE_BUSY_MS, durable, autocheckpoint))
    return engine
