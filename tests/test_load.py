"""Under load: jobs running while deliveries stream in, and a database another process holds.

The first test is bench/load.py's scenario, smaller: `handoff serve`, the GitHub simulator
and the scripted model as separate processes, Podman sandboxes, SQLite.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest
from helpers import SECRET, labeled
from test_webhook import post

from bot.jobs.store import Store
from bot.jobs.worker import JobResult, LogReporter, Worker
from bot.jobs.worker_settings import WorkerSettings
from bot.receiver.web import create_app
from bot.server import running
from handlers import Context

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench.load import Scenario, run_scenario  # noqa: E402


@pytest.mark.podman
async def test_jobs_and_a_stream_of_deliveries_all_land(tmp_path: Path) -> None:
    s = Scenario(db="sqlite", jobs=3, rate=30, steps=2, burn=0.3, idle_seconds=1,
                 timeout=240, port_base=18540)
    f = await run_scenario(s, tmp_path)
    assert f["sent"] > 30
    assert f["refused"] == 0, f  # every delivery of the stream recorded: no 5xx
    assert f["triggers"] == 3 and f["trigger_refused"] == 0, f
    assert f["jobs"] == 3 and f["succeeded"] == 3, f["bad_jobs"]
    assert f["locked"] == 0


class HeldDatabase:
    """Another process's write transaction on the database file (an `sqlite3` shell, a
    backup), held until released."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release_after(self, seconds: float) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(seconds, self.conn.rollback)


@pytest.fixture
async def client(store: Store) -> httpx.AsyncClient:  # type: ignore[misc]
    async with running(create_app(store, SECRET, Context())) as url, \
            httpx.AsyncClient(base_url=url) as c:
        yield c


async def test_a_trigger_waits_out_a_busy_database(client: httpx.AsyncClient, store: Store,
                                                   tmp_path: Path) -> None:
    HeldDatabase(tmp_path / "handoff.db").release_after(1.0)
    resp = await post(client, "issues", labeled(), delivery="held-1")
    assert resp.status_code == 202, resp.text
    assert (await store.delivery("held-1") or {}).get("job_id") == resp.json()["job"]


async def test_a_database_busy_too_long_is_a_500_and_logged(
        client: httpx.AsyncClient, store: Store, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    store.busy_seconds = 0.5
    held = HeldDatabase(tmp_path / "handoff.db")
    resp = await post(client, "issues", labeled(), delivery="held-2")
    held.conn.rollback()
    assert resp.status_code == 500
    assert "held-2 (issues.labeled) could not be recorded" in caplog.text
    again = await post(client, "issues", labeled(), delivery="held-2")  # GitHub's redelivery
    assert again.status_code == 202 and await store.delivery("held-2") is not None


class Quick:
    async def run(self, job: object) -> JobResult:
        return JobResult(summary="done")


async def test_a_job_ends_although_the_database_is_held_when_it_finishes(
        store: Store, tmp_path: Path) -> None:
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo="o/r", issue_number=1, requested_by="alice"))
    store.busy_seconds = 0.2
    worker = Worker(store, Quick(), LogReporter(), WorkerSettings(poll_seconds=0.1))
    job = await store.claim(worker.id, 60)
    assert job is not None and job.id == job_id
    HeldDatabase(tmp_path / "handoff.db").release_after(1.5)
    await worker.process(job)
    ended = await store.get_job(job_id)
    assert ended and ended.state == "succeeded" and ended.reported


def writers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if "_write_forever" in repr(t.get_coro())]


async def test_a_stopped_server_leaves_no_writer_behind(store: Store) -> None:
    """The ingest writer stops with the server (it was left pending, and asyncio said
    "Task was destroyed but it is pending" when the loop closed)."""
    async with running(create_app(store, SECRET, Context())) as url, \
            httpx.AsyncClient(base_url=url) as client:
        assert (await post(client, "issues", labeled(), delivery="one")).status_code == 202
        assert len(writers()) == 1
    assert writers() == []
    assert await store.delivery("one")  # what it took is written
