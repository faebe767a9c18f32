"""Schema migrations on Alembic: a new database gets head, one the hand-written migrations made
upgrades with its rows and its queued job, one a newer Handoff migrated is refused by every
command, and the models never drift from the head revision."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from bot.jobs.record import JobRecord
from bot.jobs.schema import metadata
from bot.jobs.store import Job, Store
from bot.jobs.store.migrations import NewerSchema, baseline, current, head
from bot.jobs.worker import JobResult, Worker

ROOT = Path(__file__).resolve().parent.parent
FUTURE = "0999_from_a_newer_handoff"
T = TypeVar("T")

# What each hand-written step after the first added, by the version that added it.
LATER_COLUMNS = {2: ["not_before", "deferrals"], 3: ["cancel_by"],
                 4: ["lease_token", "report_after", "report_attempts", "report_error",
                     "unreportable"],
                 7: ["cancel_reason"]}
LATER_TABLES = {5: ["requests"], 6: ["budgets"], 7: ["replies", "payloads"], 8: ["secrets"]}


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file, or a database of its own on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"
        return
    pg_url: str = request.getfixturevalue("pg_url")
    admin = create_async_engine(pg_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text("DROP DATABASE IF EXISTS handoff_migrations"))
        await conn.execute(sa.text("CREATE DATABASE handoff_migrations"))
    await admin.dispose()
    yield pg_url.replace("/postgres?", "/handoff_migrations?")


async def on(url: str, fn: Callable[[sa.Connection], T]) -> T:
    """Run ``fn(connection)`` in one transaction on the database at ``url``."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def made_the_old_way(version: int) -> Callable[[sa.Connection], None]:
    """What Handoff's hand-written migrations left at ``version``: their version 1 created
    the models' tables, each later step added columns or tables and a ``schema_version`` row;
    a queued job and a row in every table."""
    def make(conn: sa.Connection) -> None:
        baseline.tables.create_all(conn)
        t, now = baseline.tables.tables, time.time()
        conn.execute(t["deliveries"].insert().values(
            id="d-1", event="issues", action="labeled", repo="acme/calc", outcome="queued job 1",
            job_id=1, received_at=now))
        conn.execute(t["installations"].insert().values(
            id=1, account="acme", state="active", repositories=["acme/calc"], updated_at=now))
        conn.execute(t["jobs"].insert().values(
            kind="implement", repo="acme/calc", installation_id=1, issue_number=7,
            state="queued", requested_by="alice", context={}, result={}, delivery_id="d-1",
            created_at=now, updated_at=now))
        conn.execute(t["requests"].insert().values(
            job_id=1, repo="acme/calc", number=7, kind="trigger", requested_by="bob",
            created_at=now))
        conn.execute(t["budgets"].insert().values(
            scope="org", name="acme", dollars=50.0, jobs=10, updated_at=now))
        conn.execute(t["replies"].insert().values(scope="job:1", login="bob", created_at=now))
        conn.execute(t["payloads"].insert().values(
            digest="ab" * 32, delivery_id="d-1", received_at=now))
        conn.execute(t["secrets"].insert().values(
            scope="repo", target="acme/calc", name="INDEX_TOKEN", value="sealed", updated_at=now))
        for step in range(version + 1, baseline.LAST_HAND_VERSION + 1):
            for table in LATER_TABLES.get(step, []):
                conn.execute(sa.text(f"DROP TABLE {table}"))
            for column in LATER_COLUMNS.get(step, []):
                conn.execute(sa.text(f"ALTER TABLE jobs DROP COLUMN {column}"))
        conn.execute(sa.text("CREATE TABLE schema_version "
                             "(version INTEGER PRIMARY KEY, applied_at FLOAT NOT NULL)"))
        for done in range(1, version + 1):
            conn.execute(sa.text("INSERT INTO schema_version VALUES (:v, :t)"),
                         {"v": done, "t": now})
    return make


def tables_and_rows(conn: sa.Connection) -> dict[str, int]:
    return {name: int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar() or 0)
            for name in sa.inspect(conn).get_table_names()}


def drift(conn: sa.Connection, models: sa.MetaData = metadata) -> list[Any]:
    """What ``alembic revision --autogenerate`` would write: the models against the database."""
    # Server defaults are compared where reflection reads them back as written (SQLite gives
    # '' back as a quoted literal, a difference that is none).
    opts = {"compare_type": True,
            "compare_server_default": conn.dialect.name == "postgresql"}
    return list(compare_metadata(MigrationContext.configure(conn, opts=opts), models))


def handoff(cwd: Path, db_url: str, *args: str, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env.update(HANDOFF_DATA_DIR=str(cwd / "data"), HANDOFF_DATABASE_URL=db_url,
               HANDOFF_METRICS_PORT="0", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


class Done:
    """A runner whose every job succeeds."""

    async def run(self, job: Job) -> JobResult:
        return JobResult(summary=f"did {job.repo}#{job.issue_number}", result=JobRecord())


class Reported:
    def __init__(self) -> None:
        self.jobs: list[tuple[int, str]] = []

    async def report(self, job: Job) -> None:
        self.jobs.append((job.id, job.state))


async def test_a_new_database_gets_head_and_matches_the_models(db_url: str) -> None:
    store = await Store.open(db_url)
    await store.close()
    await (await Store.open(db_url)).close()  # at head: opening again changes nothing
    assert await on(db_url, current) == (head(),)
    assert await on(db_url, drift) == []


async def test_a_model_changed_without_a_revision_is_caught(tmp_path: Path) -> None:
    """The check above can fail: a column added to the models alone shows as drift."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"
    await (await Store.open(url)).close()
    changed = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["jobs"].append_column(sa.Column("priority", sa.Integer, nullable=True))
    diffs = await on(url, lambda conn: drift(conn, changed))
    assert [d[0] for d in diffs] == ["add_column"]
    assert diffs[0][3].name == "priority"


@pytest.mark.parametrize("version", [baseline.LAST_HAND_VERSION, 1, 4])
async def test_a_database_the_hand_written_migrations_made_upgrades_and_its_job_runs(
        db_url: str, tmp_path: Path, version: int) -> None:
    await on(db_url, made_the_old_way(version))
    before = await on(db_url, tables_and_rows)
    assert before["schema_version"] == version and before["jobs"] == 1

    migrated = handoff(tmp_path, db_url, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema is at revision {head()}" in migrated.stdout
    after = await on(db_url, tables_and_rows)
    assert after.pop("alembic_version") == 1 and "schema_version" not in after
    kept = {name: rows for name, rows in before.items() if name != "schema_version"}
    assert {name: after[name] for name in kept} == kept  # every row there
    assert set(after) == set(metadata.tables)  # the tables later steps added are created
    assert await on(db_url, current) == (head(),)
    assert await on(db_url, drift) == []  # the same schema as a new database's

    listed = handoff(tmp_path, db_url, "jobs")
    assert listed.returncode == 0 and "queued" in listed.stdout and "acme/calc#7" in listed.stdout
    store = await Store.open(db_url)
    try:
        reported = Reported()
        ended = await Worker(store, Done(), reported).run_once()
        assert ended is not None and ended.id == 1 and ended.state == "succeeded"
        assert ended.deferrals == 0 and ended.report_attempts == 0  # added by the upgrade
        assert reported.jobs == [(1, "succeeded")]
    finally:
        await store.close()


def newer(conn: sa.Connection) -> None:
    conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})


async def test_a_database_a_newer_handoff_migrated_is_refused(db_url: str) -> None:
    await (await Store.open(db_url)).close()
    await on(db_url, newer)
    with pytest.raises(NewerSchema) as refused:
        await Store.open(db_url)
    assert f"revision {FUTURE}, which this Handoff" in str(refused.value)
    assert f"schema revision {head()}" in str(refused.value)
    assert await on(db_url, current) == (FUTURE,)  # left as it was


@pytest.mark.parametrize("command", [
    ["serve"], ["worker"], ["jobs"], ["migrate"], ["budgets"], ["secrets"],
    ["replay", "--record", "--event", "issues", "payload.json"]])
def test_every_command_that_opens_the_store_refuses_a_newer_schema(
        tmp_path: Path, command: list[str]) -> None:
    """After a rollback without a restore, old code must not write to the new schema: the
    command stops with both revisions and what to do."""
    db = tmp_path / "handoff.db"
    url = f"sqlite+aiosqlite:///{db}"
    (tmp_path / "payload.json").write_text('{"action": "opened"}')
    assert handoff(tmp_path, url, "jobs").returncode == 0
    with sqlite3.connect(db) as conn:  # what a newer Handoff's migration leaves
        conn.execute("UPDATE alembic_version SET version_num = ?", (FUTURE,))
    refused = handoff(tmp_path, url, *command)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"the database's schema is at revision {FUTURE}" in refused.stderr
    assert f"schema revision {head()}) does not know" in refused.stderr
    assert "Upgrade Handoff" in refused.stderr and "Traceback" not in refused.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(FUTURE,)]


def test_the_doctor_names_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "handoff.db"
    url = f"sqlite+aiosqlite:///{db}"
    assert handoff(tmp_path, url, "jobs").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (FUTURE,))
    doctor = handoff(tmp_path, url, "doctor", timeout=120)
    assert doctor.returncode != 0
    assert f"schema is at revision {FUTURE}" in doctor.stdout + doctor.stderr


async def test_a_hand_versioned_database_past_the_last_hand_version_is_refused(
        tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"
    await on(url, made_the_old_way(baseline.LAST_HAND_VERSION))
    await on(url, lambda conn: conn.execute(sa.text(
        "INSERT INTO schema_version VALUES (9, 0)")))
    with pytest.raises(NewerSchema, match="revision 9 of the hand-written migrations"):
        await Store.open(url)


def test_two_processes_opening_a_new_database_at_once_both_start(tmp_path: Path) -> None:
    """`serve --no-worker` and `worker` started together migrate one after the other."""
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    probe = ("import asyncio, sys\nfrom bot.jobs.store import Store\n"
             "async def main():\n    s = await Store.open(sys.argv[1])\n    await s.close()\n"
             "asyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", probe, url], cwd=ROOT,
                              stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors


async def test_the_receiver_s_wal_is_copied_back_in_a_thread_not_on_commit(
        tmp_path: Path) -> None:
    """The write connection never checkpoints (that fsync held webhooks up); the periodic
    checkpoint moves the log into the database."""
    from bot.jobs.store import checkpoint

    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/h.db", checkpoints=False)
    try:
        # More than SQLite's automatic checkpoint threshold (1,000 pages, 4 MB).
        rows = [(f"d{n}", "issues", "labeled", "o/r", "x" * 500, None, 0.0) for n in range(10000)]
        await store.write(lambda conn: store.insert_deliveries(conn, rows))
        db = tmp_path / "h.db"
        before = db.stat().st_size
        assert (tmp_path / "h.db-wal").stat().st_size > 5_000_000  # all of it still in the log
        checkpoint(str(db))
        assert db.stat().st_size > before + 5_000_000
    finally:
        await store.close()


async def test_a_backup_from_before_alembic_restored_after_the_upgrade_runs_its_job(
        db_url: str, tmp_path: Path) -> None:
    """The backup an operator took before upgrading, restored on the upgraded Handoff: its
    queued job runs. (PostgreSQL's restore keeps the tables a backup lacks, so Alembic's
    revision is left beside the hand-written version; the hand-written version is the truth.)"""
    await on(db_url, made_the_old_way(4))
    saved = tmp_path / "before-upgrade.backup"
    assert handoff(tmp_path, db_url, "backup", str(saved)).returncode == 0
    assert handoff(tmp_path, db_url, "migrate").returncode == 0
    store = await Store.open(db_url)
    try:  # the upgraded Handoff runs the job; then the operator goes back to the backup
        assert (await Worker(store, Done(), Reported()).run_once()) is not None
    finally:
        await store.close()

    restored = handoff(tmp_path, db_url, "restore", str(saved))
    assert restored.returncode == 0, restored.stderr
    listed = handoff(tmp_path, db_url, "jobs")
    assert listed.returncode == 0 and "queued" in listed.stdout and "acme/calc#7" in listed.stdout
    assert await on(db_url, current) == (head(),)
    assert await on(db_url, drift) == []
    store = await Store.open(db_url)
    try:
        ended = await Worker(store, Done(), Reported()).run_once()
        assert ended is not None and ended.id == 1 and ended.state == "succeeded"
    finally:
        await store.close()


async def test_an_upgrade_that_fails_leaves_the_database_as_it_was(db_url: str) -> None:
    """Migrations run in one transaction, SQLite's DDL included: a step that fails halfway
    (here the baseline's index, whose name a stray index holds) undoes the steps before it."""
    await on(db_url, made_the_old_way(4))
    await on(db_url, lambda conn: conn.execute(sa.text(
        "CREATE INDEX requests_unanswered ON deliveries (repo)")))
    before = await on(db_url, tables_and_rows)
    columns = await on(db_url, lambda conn: {
        c["name"] for c in sa.inspect(conn).get_columns("jobs")})
    with pytest.raises(sa.exc.DBAPIError, match="requests_unanswered"):
        await Store.open(db_url)
    assert await on(db_url, tables_and_rows) == before  # no requests, budgets..., no revision
    assert await on(db_url, lambda conn: {
        c["name"] for c in sa.inspect(conn).get_columns("jobs")}) == columns
    assert await on(db_url, baseline.hand_version) == 4


NEXT_REVISION = '''
import shutil, sys
from pathlib import Path
import sqlalchemy as sa
from alembic import command
from bot.jobs import schema
from bot.jobs.store.migrations import HERE, config, head

# A model change SQLite cannot make with ALTER (a column's type) and one it can (a column).
schema.jobs.c.requested_by.type = sa.String(300)
schema.jobs.append_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
where = Path(sys.argv[2]) / "migrations"
shutil.copytree(HERE, where, ignore=shutil.ignore_patterns("__pycache__"))
engine = sa.create_engine(sys.argv[1])
with engine.begin() as conn:
    cfg = config(conn)
    cfg.set_main_option("script_location", str(where))
    following = f"{int(head()) + 1:04d}"
    command.revision(cfg, "jobs have a priority", autogenerate=True, rev_id=following)
    command.upgrade(cfg, "head")
engine.dispose()
print(next((where / "versions").glob(f"{following}*.py")).read_text())
'''


async def test_a_revision_autogenerate_writes_alters_sqlite_in_batch_and_keeps_rows(
        tmp_path: Path) -> None:
    """The way a developer makes the next revision (autogenerate from the changed models)
    gives batch operations on SQLite, which copy the table with its rows and its partial
    unique index."""
    db = tmp_path / "handoff.db"
    await on(f"sqlite+aiosqlite:///{db}", made_the_old_way(baseline.LAST_HAND_VERSION))
    await (await Store.open(f"sqlite+aiosqlite:///{db}")).close()
    made = subprocess.run([sys.executable, "-c", NEXT_REVISION, f"sqlite:///{db}",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    assert "with op.batch_alter_table('jobs'" in made.stdout
    assert "type_=sa.String(length=300)" in made.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == \
            [(f"{int(head()) + 1:04d}",)]
        assert conn.execute("SELECT id, state, priority FROM jobs").fetchall() == \
            [(1, "queued", 0)]
        index = conn.execute("SELECT sql FROM sqlite_master WHERE name = "
                             "'one_active_job_per_issue'").fetchone()[0]
        assert "WHERE state IN ('queued', 'running')" in index
        assert "VARCHAR(300)" in conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]


async def test_a_database_whose_first_hand_written_step_never_ran_gets_every_table(
        db_url: str) -> None:
    """The old code made its version table first, then the tables: stopped between the two,
    it left an empty ``schema_version`` only."""
    await on(db_url, lambda conn: conn.execute(sa.text(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at FLOAT NOT NULL)")))
    await (await Store.open(db_url)).close()
    assert await on(db_url, current) == (head(),)
    assert await on(db_url, drift) == []
