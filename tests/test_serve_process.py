"""`handoff serve` as a person runs it: the receiver in one process, its worker a child at a
lower CPU priority that is woken for new jobs, restarted when it dies, and stopped with it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import SECRET, headers, labeled, unused_port

from bot import logs
from bot.jobs.store import Store

ROOT = Path(__file__).parent.parent


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    port, metrics_port = unused_port(), unused_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], cwd=tmp_path,
            stdout=out, stderr=subprocess.STDOUT, text=True,
            env={**clean, "PYTHONPATH": str(ROOT), "HANDOFF_DATA_DIR": str(tmp_path / "data"),
                 "HANDOFF_WEBHOOK_SECRET": SECRET.decode(), "HANDOFF_POLL_SECONDS": "30",
                 "HANDOFF_STOP_SECONDS": "5", "HANDOFF_METRICS_PORT": str(metrics_port)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: child_of(proc.pid) is not None and up(url), "serve and its worker")
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def child_of(pid: int) -> int | None:
    """The worker process `serve` started, if it runs."""
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", "bot.cli worker"],
                           capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def wait_for(check: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {seconds} s")


def job_states(data: Path, limit: int = 10) -> list[str]:
    async def read() -> list[str]:
        store = await Store.open(f"sqlite+aiosqlite:///{data}/handoff.db")
        try:
            return [j.state for j in await store.list_jobs(limit)]
        finally:
            await store.close()

    return asyncio.run(read())


def test_the_worker_is_a_lower_priority_child_woken_for_a_new_job(
        served: tuple[subprocess.Popen[str], str, Path], tmp_path: Path) -> None:
    proc, url, log = served
    worker = child_of(proc.pid)
    assert worker is not None
    wait_for(lambda: niceness(worker) == niceness(proc.pid) + 5, "worker at nice +5")
    body = json.dumps(labeled()).encode()
    answer = httpx.post(f"{url}/webhook", content=body, headers=headers("issues", body))
    assert answer.status_code == 202, answer.text
    # No App is configured, so the job ends saying so: long before the 30 s poll, since the
    # receiver wakes its worker.
    wait_for(lambda: job_states(tmp_path / "data") == ["failed"], "job ended by the worker",
             seconds=15)
    assert httpx.get(f"{url}/metrics").status_code == 404  # not on the public port
    metrics_url = f"{logs.listeners(log.read_text().splitlines())['metrics']}/metrics"
    scraped = httpx.get(metrics_url).text
    assert 'handoff_deliveries_total{event="issues",outcome="accepted"} 1.0' in scraped
    assert 'handoff_jobs{category="not-configured",state="failed"} 1.0' in scraped


def test_a_worker_that_dies_is_restarted_and_said_so(
        served: tuple[subprocess.Popen[str], str, Path]) -> None:
    proc, _, log = served
    first = child_of(proc.pid)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: child_of(proc.pid) not in (None, first), "second worker", seconds=20)
    assert f"worker process {first} exited with -9; starting another" in log.read_text()


def test_stopping_serve_stops_its_worker(served: tuple[subprocess.Popen[str], str, Path]
                                         ) -> None:
    proc, _, log = served
    worker = child_of(proc.pid)
    assert worker is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    assert not Path(f"/proc/{worker}").exists() or \
        "zombie" in Path(f"/proc/{worker}/status").read_text()


def test_wakes_while_the_worker_starts_never_kill_it(
        served: tuple[subprocess.Popen[str], str, Path], tmp_path: Path) -> None:
    """Issue 20: serve woke its child with SIGUSR1, which killed a child still starting (no
    handler yet) and sent it into back-off. Now a burst of jobs arriving while a fresh
    worker starts leaves it alive, and it takes every job at once (the poll is 30 s)."""
    proc, url, log = served
    first = child_of(proc.pid)
    assert first is not None
    os.kill(first, signal.SIGKILL)  # serve starts another after 1 s: the burst meets its start
    sent, deadline = 0, time.monotonic() + 5
    while time.monotonic() < deadline:
        sent += 1
        body = json.dumps(labeled(number=sent)).encode()
        answer = httpx.post(f"{url}/webhook", content=body, headers=headers("issues", body))
        assert answer.status_code == 202, answer.text
        time.sleep(0.02)
    second = child_of(proc.pid)
    assert second not in (None, first)
    wait_for(lambda: job_states(tmp_path / "data", sent + 5) == ["failed"] * sent,
             f"{sent} jobs ended by the worker", seconds=20)
    assert child_of(proc.pid) == second
    restarts = [line for line in log.read_text().splitlines() if "exited with" in line]
    assert len(restarts) == 1 and "exited with -9" in restarts[0], restarts


def test_the_shared_metric_files_are_off_the_data_disk_and_allocated_whole(
        served: tuple[subprocess.Popen[str], str, Path], tmp_path: Path) -> None:
    """Issue 20: the metric files serve and its worker map into memory were sparse files in
    the data directory; a page first written while that disk was full killed the worker
    (SIGBUS). They are on a memory file system now, allocated whole, and gone with serve."""
    proc, _, log = served
    worker = child_of(proc.pid)
    assert worker is not None
    environ = Path(f"/proc/{worker}/environ").read_bytes().decode().split("\0")
    folder = Path(dict(v.split("=", 1) for v in environ if "=" in v)["PROMETHEUS_MULTIPROC_DIR"])
    assert not folder.is_relative_to(tmp_path)
    assert subprocess.run(["stat", "-f", "-c", "%T", str(folder)], capture_output=True,
                          text=True).stdout.strip() == "tmpfs"

    def allocated() -> list[Path]:
        return [f for f in folder.glob(f"*_{worker}.db") if f.stat().st_blocks * 512 >= 256 << 10]

    wait_for(lambda: len(allocated()) == 4, "the worker's four metric files, allocated")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    assert not folder.exists()
