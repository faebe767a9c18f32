"""Schema migrations: processes that start together on one new database all come up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    from bot.jobs.store import Store, checkpoint

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


def test_older_code_refuses_a_database_a_newer_handoff_upgraded(tmp_path: Path) -> None:
    """After an upgrade is rolled back, the old code must not write to the new schema: the
    command stops with the reason and what to do."""
    import sqlite3

    from bot.jobs.schema import MIGRATIONS

    db = tmp_path / "handoff.db"
    env = {"HANDOFF_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
           "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{db}", "PYTHONPATH": str(ROOT)}
    first = subprocess.run([sys.executable, "-m", "bot.cli", "jobs"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "no jobs yet" in first.stdout, first.stderr
    with sqlite3.connect(db) as conn:  # what a newer Handoff's migration leaves
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)",
                     (len(MIGRATIONS) + 1,))
    again = subprocess.run([sys.executable, "-m", "bot.cli", "jobs"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1
    assert f"schema is version {len(MIGRATIONS) + 1}, newer than this Handoff knows" in \
        again.stderr
    assert "Traceback" not in again.stderr
