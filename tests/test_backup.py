"""`handoff backup` and `handoff restore` as an operator runs them around an upgrade: the
backup taken, things go wrong, the backup restored, and the job that was queued runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bot.jobs.store import Store

ROOT = Path(__file__).parent.parent


def handoff(cwd: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env.update(HANDOFF_DATA_DIR=str(cwd / "data"), HANDOFF_DATABASE_URL=db_url,
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


async def queue(store: Store, issue: int) -> int:
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo="acme/calc", issue_number=issue, requested_by="alice",
        installation_id=1))
    assert job_id is not None
    return job_id


async def backup_lose_restore(tmp_path: Path, url: str) -> None:
    store = await Store.open(url)
    waiting = await queue(store, issue=7)
    await store.close()
    saved = tmp_path / "handoff.backup"
    made = handoff(tmp_path, url, "backup", str(saved))
    assert made.returncode == 0, made.stderr
    assert saved.stat().st_size > 0 and saved.stat().st_mode & 0o077 == 0  # holds job data

    store = await Store.open(url)  # after the backup: the job is lost, another one comes
    claimed = await store.claim("upgrade-gone-wrong", 60)
    assert claimed is not None and claimed.id == waiting
    await store.finish(waiting, "upgrade-gone-wrong", "failed", reason="broken upgrade",
                       category="internal", token=claimed.lease_token)
    await queue(store, issue=8)
    await store.close()

    back = handoff(tmp_path, url, "restore", str(saved))
    assert back.returncode == 0, back.stderr
    listed = handoff(tmp_path, url, "jobs")
    assert "queued" in listed.stdout and "acme/calc#7" in listed.stdout
    assert "acme/calc#8" not in listed.stdout

    store = await Store.open(url)  # a worker starting on the restored store takes it
    again = await store.claim("worker-after-restore", 60)
    assert again is not None and again.id == waiting and again.issue_number == 7
    await store.close()


async def test_sqlite_backup_and_restore(tmp_path: Path) -> None:
    await backup_lose_restore(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")


async def test_postgres_backup_and_restore(tmp_path: Path, pg_url: str) -> None:
    admin = create_async_engine(pg_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text("DROP DATABASE IF EXISTS handoff_backup"))
        await conn.execute(sa.text("CREATE DATABASE handoff_backup"))
    await admin.dispose()
    await backup_lose_restore(tmp_path, pg_url.replace("/postgres?", "/handoff_backup?"))


def test_a_backup_that_is_not_one_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"
    assert handoff(tmp_path, url, "jobs").returncode == 0
    before = (tmp_path / "handoff.db").read_bytes()
    junk = tmp_path / "junk.backup"
    junk.write_bytes(b"not a database" * 100)
    result = handoff(tmp_path, url, "restore", str(junk))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("handoff restore:")
    assert (tmp_path / "handoff.db").read_bytes() == before
    missing = handoff(tmp_path, url, "restore", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no backup at" in missing.stderr
