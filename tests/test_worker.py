"""The job store and worker: claims, leases, crashes, cancellation and failure reporting."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

import pytest
from helpers import queue

from bot.jobs.store import Job, Store
from bot.jobs.worker import JobFailed, JobResult, UnconfiguredRunner, Worker
from bot.jobs.worker_settings import WorkerSettings

HERE = Path(__file__).parent


class Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.reported: list[tuple[int, str, str]] = []
        self.fail = fail

    async def report(self, job: Job) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("GitHub down")
        self.reported.append((job.id, job.state, job.reason))


async def test_one_active_job_per_issue(store: Store) -> None:
    await queue(store)
    assert await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo="o/r", issue_number=1, requested_by="bob")) is None
    await queue(store, issue=2)


async def test_skeleton_job_ends_visibly_failed(store: Store) -> None:
    job_id = await queue(store)
    rec = Recorder()
    job = await Worker(store, UnconfiguredRunner(), rec).run_once()
    assert job and job.state == "failed" and "no GitHub App is configured" in job.reason
    assert job.reported and rec.reported == [(job_id, "failed", job.reason)]


async def test_crash_in_runner_is_recorded(store: Store) -> None:
    class Boom:
        async def run(self, job: Job) -> JobResult:
            raise RuntimeError("kaput")

    await queue(store)
    job = await Worker(store, Boom(), Recorder()).run_once()
    assert job and job.state == "failed" and job.category == "internal"
    assert "RuntimeError: kaput" in job.reason


async def test_failed_report_is_retried_by_the_sweep(store: Store) -> None:
    class Fails:
        async def run(self, job: Job) -> JobResult:
            raise JobFailed("model-error", "the model API answered 500 three times")

    await queue(store)
    rec = Recorder(fail=1)
    worker = Worker(store, Fails(), rec, WorkerSettings(report_retry_seconds=0))
    job = await worker.run_once()
    assert job and not job.reported and rec.reported == []
    await worker.reports.pending()
    assert rec.reported == [(job.id, "failed", "the model API answered 500 three times")]


async def test_cancel_stops_running_job(store: Store) -> None:
    started = asyncio.Event()

    class Slow:
        async def run(self, job: Job) -> JobResult:
            started.set()
            await asyncio.sleep(30)
            return JobResult("never")

    job_id = await queue(store)
    worker = Worker(store, Slow(), Recorder(), WorkerSettings(heartbeat_seconds=0.05))
    task = asyncio.create_task(worker.run_once())
    await started.wait()
    touched = await store.write(lambda conn: store.cancel_jobs(
        conn, "o/r", 1, "/cancel by @alice", False))
    assert touched == [job_id]
    job = await asyncio.wait_for(task, 5)
    assert job and job.state == "cancelled" and job.reason == "/cancel by @alice"


async def test_expired_lease_is_claimable_and_attempts_bounded(store: Store) -> None:
    await queue(store)
    first = await store.claim("w1", lease_seconds=-1)  # already expired
    second = await store.claim("w2", lease_seconds=60)
    assert first and second and first.id == second.id and second.attempts == 2
    assert await store.claim("w3", lease_seconds=60) is None
    assert not await store.finish(first.id, "w1", "succeeded")  # w1 lost its lease


async def test_worker_gives_up_after_max_attempts(store: Store) -> None:
    await queue(store)
    for _ in range(3):
        await store.claim("dead", lease_seconds=-1)
    worker = Worker(store, UnconfiguredRunner(), Recorder(), WorkerSettings(max_attempts=3))
    job = await worker.run_once()
    assert job and job.state == "failed" and job.category == "worker-lost"


async def test_killed_worker_process_job_is_taken_over(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    store = await Store.open(url)
    job_id = await queue(store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    script = str(HERE / "worker_proc.py")
    first = subprocess.Popen([sys.executable, script, url, "hang"], stdout=subprocess.PIPE,
                             text=True, env=env)
    assert first.stdout and first.stdout.readline().strip() == f"claimed {job_id}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()
    second = subprocess.run([sys.executable, script, url, "finish"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert second.stdout.strip() == f"ended {job_id} succeeded", second.stderr
    job = await store.get_job(job_id)
    assert job and job.state == "succeeded" and job.attempts == 2
    await store.close()


async def test_rate_limited_job_is_parked_not_held(store: Store) -> None:
    import time

    from bot.jobs.worker import JobDeferred

    class Limited:
        calls = 0

        async def run(self, job: Job) -> JobResult:
            Limited.calls += 1
            raise JobDeferred(time.time() + 0.6, "GitHub answered 403 API rate limit exceeded")

    job_id = await queue(store)
    worker = Worker(store, Limited(), Recorder(), WorkerSettings(max_deferrals=2))
    assert await worker.run_once() is not None
    parked = await store.get_job(job_id)
    assert parked and parked.state == "queued" and parked.stage == "rate-limited"
    assert parked.attempts == 0 and parked.deferrals == 1
    assert await store.claim("w", 60) is None  # not before the reset
    await asyncio.sleep(0.7)
    await worker.run_once()
    await asyncio.sleep(0.7)
    ended = await worker.run_once()
    assert ended and ended.state == "failed" and "rate limit" in ended.reason
    assert Limited.calls == 3


async def test_worker_survives_a_database_outage(store: Store, tmp_path: Path) -> None:
    calls = {"n": 0}
    real_claim = store.claim

    async def flaky_claim(owner: str, lease: float, exclude: Collection[int] = ()) -> Job | None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ConnectionError("database is away")
        return await real_claim(owner, lease, exclude)

    store.claim = flaky_claim  # type: ignore[method-assign]
    job_id = await queue(store)
    rec = Recorder()
    worker = Worker(store, UnconfiguredRunner(), rec, WorkerSettings(poll_seconds=0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run_forever(stop))
    for _ in range(200):
        if rec.reported:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert rec.reported and rec.reported[0][0] == job_id and calls["n"] >= 3


async def test_the_worker_forgets_old_deliveries(store: Store, tmp_path: Path) -> None:
    import time

    from bot.config import Settings
    from bot.jobs.schema import deliveries
    from bot.wiring import build_worker

    settings = Settings(data_dir=tmp_path, app_id=None, private_key=None,
                        delivery_retention_days=30)
    await store.write(lambda conn: conn.execute(deliveries.insert().values(
        id="ancient", event="push", received_at=time.time() - 40 * 86400)))
    worker = build_worker(settings, store)
    await worker.housekeeping.run_due()  # the first round of periodic tasks runs at start-up
    assert await store.delivery("ancient") is None


async def test_failing_housekeeping_is_logged_and_the_rest_still_runs(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("database is away")

    async def fine() -> None:
        ran.append("fine")

    worker = Worker(store, UnconfiguredRunner(), Recorder(), periodic=[(0, broken), (0, fine)])
    await worker.housekeeping.run_due()
    await worker.housekeeping.run_due()  # due again at once (every 0 s): tried again, not dropped
    assert ran == ["fine", "fine"]
    assert caplog.text.count("periodic task broken failed") == 2
    assert "database is away" in caplog.text


async def test_one_of_several_workers_claims_a_queued_job_s_announcement(
        store: Store) -> None:
    """Workers that read the queue at once each try to claim the announcement; one wins, so
    a waiting issue gets one "Queued" comment, not one per worker."""
    await queue(store)
    reads = [(await store.queued())[0] for _ in range(3)]  # all read before anyone claims
    wins = [await store.update_queued(job.id, unchanged_since=job.updated_at,
                                      result=job.result.with_(announced=True))
            for job in reads]
    assert wins == [True, False, False]
    [job] = await store.queued()
    assert job.result.announced is True


async def test_a_job_that_ends_as_its_lease_is_renewed_logs_no_lost_lease(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The job ends in the same moment a renewal returns: the cancellation of the heartbeat
    is lost inside asyncio.wait_for (Python 3.11), and the next renewal finds the lease
    released by the job's own end. That is not a lost lease, and says nothing."""
    renewed = asyncio.Event()

    class Beat(Store):
        async def heartbeat(self, *args: object, **kwargs: object) -> bool | None:
            answer = await super().heartbeat(*args, **kwargs)  # type: ignore[arg-type]
            renewed.set()  # the job wakes as this renewal returns
            return answer

    class EndsOnRenewal:
        async def run(self, job: Job) -> JobResult:
            await renewed.wait()
            return JobResult("done")

    beat = Beat(store.engine, store.sync_engine)
    await queue(beat)
    worker = Worker(beat, EndsOnRenewal(), Recorder(), WorkerSettings(heartbeat_seconds=0.05))
    job = await worker.run_once()
    assert job and job.state == "succeeded"
    await asyncio.sleep(0.3)  # a heartbeat that outlived its job would renew by now
    assert "lease lost" not in caplog.text


def test_the_shutdown_grace_fits_the_stop_timeouts_of_deploy() -> None:
    """A stop waits SHUTDOWN_GRACE for running jobs and STOP_SECONDS to hand the rest back:
    the systemd unit, the compose file and the worker pod allow both before they kill."""
    import re

    from bot.config import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    needed = settings.shutdown_grace + settings.stop_seconds
    deploy = HERE.parent / "deploy"
    allowed = {
        "systemd": re.search(r"TimeoutStopSec=(\d+)", (deploy / "systemd/handoff.service")
                             .read_text()),
        "compose": re.search(r"stop_grace_period: (\d+)s", (deploy / "compose.yml").read_text()),
        "kubernetes": re.search(r"terminationGracePeriodSeconds: (\d+)",
                                (deploy / "kubernetes/handoff.yaml").read_text()),
    }
    for where, found in allowed.items():
        assert found and int(found[1]) > needed, (where, needed)
