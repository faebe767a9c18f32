"""Failures that used to end silently or wrongly (issue 12), each shown as a person sees it:
on the simulated GitHub, in `handoff jobs`, in the logs. Real parts throughout: the simulator
with its fault injection, SQLite files held by another connection, real Worker and reporter."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sim import app_client, simulator
from test_load import HeldDatabase

from bot.reporter import GitHubReporter
from bot.simulator import Fault, Simulator
from bot.store import Job, LeaseLost, Store
from bot.worker import JobResult, LogReporter, UnconfiguredRunner, Worker

ROOT = Path(__file__).parent.parent
REPO = "acme/calc"


async def ended(store: Store, repo: str, issue: int, installation_id: int | None,
                result: dict[str, object] | None = None) -> int:
    """A job that failed and whose report is due now."""
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo=repo, issue_number=issue, requested_by="acme",
        installation_id=installation_id))
    assert job_id is not None
    job = await store.claim("w0", 60)
    assert job is not None and job.id == job_id
    assert await store.finish(job_id, "w0", "failed", "the model API answered 500 three times",
                              "model-error", result or {}, job.lease_token)
    return job_id


def comments(sim: Simulator, repo: str, number: int) -> list[str]:
    return [c.body for c in sim.get_repo(repo).issues[number].comments]


def installation(sim: Simulator) -> int:
    return sim.get_repo(REPO).installation_id


async def test_reports_that_can_never_post_do_not_block_the_others(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Failure 1 and 8: 25 jobs of an archived repository, one whose installation was never
    named, and a later job whose report hits a 502 burst: the later one is posted, once; the
    others are marked unreportable, logged, counted and shown by `handoff jobs`."""
    async with simulator(tmp_path / "gh") as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        sim.add_repo("acme/old", {"README.md": "x\n"}).archived = True
        for n in range(1, 26):
            sim.open_issue("acme/old", f"Old {n}", "x", "acme")
            await ended(store, "acme/old", n, installation(sim))
        nowhere = await ended(store, REPO, 99, None)
        number = sim.open_issue(REPO, "Fix", "x", "acme").number
        late = await ended(store, REPO, number, installation(sim))
        sim.add_fault(Fault("5xx", 4, status=502, match=f"/issues/{number}/comments"))
        worker = Worker(store, UnconfiguredRunner(), GitHubReporter(app_client(sim)))
        worker.report_retry_seconds = 0.2
        for _ in range(20):
            await worker.report_pending()
            job = await store.get_job(late)
            if job and job.reported:
                break
            await asyncio.sleep(0.25)
        assert job and job.reported, job
        [failure] = comments(sim, REPO, number)
        assert f"Handoff job {late} failed" in failure
        assert all(comments(sim, "acme/old", n) == [] for n in range(1, 26))
    assert await store.report_counts() == {"reported": 1, "pending": 0, "unreportable": 26}
    old = await store.get_job(1)
    assert old and old.unreportable and "archived" in old.report_error
    lost = await store.get_job(nowhere)
    assert lost and lost.unreportable and "no installation" in lost.report_error
    assert worker.unreportable_total == 26
    assert caplog.text.count("can never be reported on GitHub") == 26
    listed = subprocess.run(
        [sys.executable, "-m", "bot.cli", "jobs", "-n", "30"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HANDOFF_DATA_DIR": str(tmp_path / "d"),
             "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"},
        timeout=60)
    assert listed.stdout.count("NOT REPORTED, cannot be") == 26, listed.stdout + listed.stderr
    assert "0 pending, 26 unreportable" in listed.stdout


async def test_three_workers_post_each_report_once(tmp_path: Path) -> None:
    """Failure 3: three workers sweeping reports at once, GitHub answering slowly: one
    comment per job."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    stores = [await Store.open(url) for _ in range(3)]
    async with simulator(tmp_path / "gh") as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        for n in range(1, 9):
            await ended(stores[0], REPO, sim.open_issue(REPO, f"I{n}", "x", "acme").number,
                        installation(sim))
        sim.add_fault(Fault("slow", 10_000, delay=0.1))
        workers = [Worker(s, UnconfiguredRunner(), GitHubReporter(app_client(sim)))
                   for s in stores]
        await asyncio.gather(*(w.report_pending() for w in workers))
        sim.world.faults.clear()
        for n in range(1, 9):
            assert len(comments(sim, REPO, n)) == 1, (n, comments(sim, REPO, n))
    assert await stores[0].report_counts() == {"reported": 8, "pending": 0, "unreportable": 0}
    for s in stores:
        await s.close()


async def test_a_failed_check_run_then_a_retry_posts_the_comment_once(
        store: Store, tmp_path: Path) -> None:
    """Failure 7: the failure comment went out, the check run did not (502s); the retry
    finds the comment by its hidden marker and posts only the check run."""
    async with simulator(tmp_path / "gh") as sim:
        repo = sim.add_repo(REPO, {"README.md": "x\n"})
        head = sim.get_repo(REPO)  # any commit of the repository will do as the head
        from bot.simulator.git import git as simgit
        sha = simgit("rev-parse", "main", cwd=head.path).strip()
        number = sim.open_issue(REPO, "Fix", "x", "acme").number
        job_id = await ended(store, REPO, number, installation(sim),
                             {"head_sha": sha, "wip_branch": "main"})
        sim.add_fault(Fault("5xx", 4, status=502, match="/check-runs"))
        worker = Worker(store, UnconfiguredRunner(), GitHubReporter(app_client(sim)))
        worker.report_retry_seconds = 0.3
        await worker.report_pending()
        job = await store.get_job(job_id)
        assert job and not job.reported and "502" in job.report_error
        await asyncio.sleep(0.4)
        await worker.report_pending()
        job = await store.get_job(job_id)
        assert job and job.reported
        assert len(comments(sim, REPO, number)) == 1
        [check] = repo.check_runs.values()
        assert check.conclusion == "failure"


class SideEffects:
    """A job that acts (think: pushes) every 50 ms, noting who acted when."""

    def __init__(self, name: str, acts: list[tuple[str, float]], forever: bool) -> None:
        self.name, self.acts, self.forever = name, acts, forever

    async def run(self, job: Job) -> JobResult:
        for _ in range(10**6 if self.forever else 3):
            self.acts.append((self.name, time.monotonic()))
            await asyncio.sleep(0.05)
        return JobResult(summary=f"done by {self.name}")


async def test_a_worker_that_cannot_renew_stops_before_another_takes_over(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Failure 2: the database is locked past the lease. The first worker stops its job
    before the lease runs out, so the worker that takes it over never runs beside it; the
    first worker's writes are refused afterwards (its lease token is stale)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    first, second = await Store.open(url), await Store.open(url)
    acts: list[tuple[str, float]] = []
    job_id = await first.write(lambda conn: first.insert_job(
        conn, kind="implement", repo="o/r", issue_number=1, requested_by="a"))
    worker_a = Worker(first, SideEffects("A", acts, forever=True), LogReporter(),
                      lease_seconds=1.2, heartbeat_seconds=0.2)
    running = asyncio.create_task(worker_a.run_once())
    while not acts:
        await asyncio.sleep(0.01)
    claimed = await first.get_job(job_id)
    assert claimed and claimed.lease_token
    held = HeldDatabase(tmp_path / "shared.db")
    await asyncio.sleep(2.5)
    held.conn.rollback()
    taken = await second.claim("B", 60)  # at once, before the first worker's next beat
    taken_at = time.monotonic()
    assert taken and taken.id == job_id and taken.attempts == 2
    await asyncio.wait_for(running, 10)
    last_a = max(t for who, t in acts if who == "A")
    assert last_a < taken_at - 0.5, "the first worker went on after losing its lease"
    assert "stopping it before its lease runs out" in caplog.text
    with pytest.raises(LeaseLost):
        await first.update_held(job_id, claimed.lease_token, stage="pushing")
    assert not await first.holds(job_id, claimed.lease_token)
    await first.close()
    await second.close()


async def test_a_heartbeat_rides_out_a_short_lock(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Failure 2: a lock longer than a heartbeat but shorter than the lease costs nothing:
    the job ends on its first try."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    store = await Store.open(url)
    acts: list[tuple[str, float]] = []

    class Slow(SideEffects):
        async def run(self, job: Job) -> JobResult:
            await asyncio.sleep(2.0)
            return await super().run(job)

    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo="o/r", issue_number=1, requested_by="a"))
    worker = Worker(store, Slow("A", acts, forever=False), LogReporter(), lease_seconds=1.5,
                    heartbeat_seconds=0.2)
    running = asyncio.create_task(worker.run_once())
    await asyncio.sleep(0.3)
    held = HeldDatabase(tmp_path / "shared.db")
    held.release_after(1.0)
    job = await asyncio.wait_for(running, 20)
    assert job and job.id == job_id and job.state == "succeeded" and job.attempts == 1
    assert "stopping" not in caplog.text
    await store.close()
