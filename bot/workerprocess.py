"""`handoff serve` runs its worker as a child process, at a lower CPU priority.

The receiver answers every webhook from its event loop; a worker on the same loop (git,
sandboxes, GitHub calls, per-stage writes) delays those answers when jobs pile up
(bench/load.py: seconds at 16 jobs). As a child the worker has its own interpreter and
loop, and niceness lets the receiver run first when the cores are busy. The child is woken
through a pipe when a job is recorded (a byte written; a signal would kill a child that has
not installed its handler yet), restarted (with back-off, loudly) if it dies, and stopped
with SIGTERM, which lets its running jobs finish within the shutdown grace and hands the rest
back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("handoff.serve")
PR_SET_PDEATHSIG = 1
MAX_BACKOFF = 60.0  # seconds between restarts of a child that keeps dying, at most
# Beyond the child's own stop_seconds: its interpreter's exit, the metric files and the
# sandboxes its hand-back removes, before it is killed.
STOP_MARGIN = 15.0


class WorkerProcess:
    """One `handoff worker` child of this process, kept running until ``stop``."""

    def __init__(self, nice: int, stop_seconds: float) -> None:
        self.nice, self.stop_seconds = nice, stop_seconds
        self.proc: asyncio.subprocess.Process | None = None
        self.wake_fd: int | None = None  # the pipe's end this process writes wakes to

    async def start(self) -> None:
        read, write = os.pipe()
        os.set_blocking(write, False)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "worker", "--child-of", str(os.getpid()),
                "--nice", str(self.nice), "--wake-fd", str(read), pass_fds=(read,))
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        self._close_pipe()
        self.wake_fd = write
        log.info("worker process %s started (nice %+d)", self.proc.pid, self.nice)

    def wake(self) -> None:
        """A job was recorded: the worker claims it now instead of at its next poll. Wakes
        sent while it starts wait in the pipe; a full pipe has a wake pending already."""
        if self.wake_fd is not None:
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self.wake_fd, b"w")

    def _close_pipe(self) -> None:
        if self.wake_fd is not None:
            os.close(self.wake_fd)
            self.wake_fd = None

    async def supervise(self, stop: asyncio.Event) -> None:
        """Keep the child running until ``stop``; then stop it and wait for its hand-back."""
        backoff = 1.0
        await self.start()
        while True:
            assert self.proc is not None
            exited = asyncio.ensure_future(self.proc.wait())
            stopping = asyncio.ensure_future(stop.wait())
            started = time.monotonic()
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                exited.cancel()
                await self.stop()
                self._close_pipe()
                return
            stopping.cancel()
            from bot.metrics import process_gone  # not at import: see share_metrics

            process_gone(self.proc.pid)
            backoff = 1.0 if time.monotonic() - started > MAX_BACKOFF else \
                min(backoff * 2, MAX_BACKOFF)
            log.error("worker process %s exited with %s; starting another in %.0f s (jobs it "
                      "held resume when their leases run out)", self.proc.pid,
                      self.proc.returncode, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            if stop.is_set():
                return
            await self.start()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), self.stop_seconds + STOP_MARGIN)
        except TimeoutError:
            log.error("worker process %s did not stop in time; killed", self.proc.pid)
            self.proc.kill()
            await self.proc.wait()


def become_child(parent: int, nice: int) -> None:
    """In the worker: lower its priority, and end it with its parent (Linux)."""
    if nice:
        os.nice(nice)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above
        raise SystemExit("handoff serve is gone; the worker stops")


def wake_on_pipe(fd: int, wake: asyncio.Event) -> None:
    """In the worker: set ``wake`` whenever `handoff serve` writes to the pipe ``fd`` (wakes
    written before this call are read at once). The pipe never reaches a sandbox."""
    os.set_inheritable(fd, False)
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if not data:  # serve is gone; PR_SET_PDEATHSIG stops this process
            loop.remove_reader(fd)
            return
        wake.set()

    loop.add_reader(fd, readable)


METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus-client's files of one process (``<kind>_<pid>.db``), mapped into memory.
METRIC_FILES = ("counter", "histogram", "gauge_mostrecent", "gauge_livesum")
METRIC_FILE_BYTES = 256 * 1024  # each holds a few thousand values; it grows past this itself


def share_metrics() -> Path:
    """Before prometheus-client is first imported: this process and its children write their
    figures in a fresh folder on a memory file system ($XDG_RUNTIME_DIR, else /dev/shm), and
    ``/metrics`` adds them up (bot/metrics.py). Never in the data directory: a page of a
    mapped file first written while that disk is full kills the process (SIGBUS). Remove the
    folder with ``shutil.rmtree`` when serve ends; folders of serves that died are removed
    here."""
    base = next((Path(d) for d in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm")
                 if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK)),
                Path(tempfile.gettempdir()))
    for stale in base.glob("handoff-metrics-*"):
        pid = stale.name.split("-")[2]
        with contextlib.suppress(OSError):  # another serve removed it meanwhile
            if stale.stat().st_uid == os.geteuid() and pid.isdigit() and \
                    not Path(f"/proc/{pid}").exists():
                shutil.rmtree(stale, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(prefix=f"handoff-metrics-{os.getpid()}-", dir=base))
    os.environ[METRICS_ENV] = str(directory)
    reserve_metric_files()
    return directory


def reserve_metric_files() -> None:
    """Allocate this process's metric files whole before prometheus-client maps them, so
    writing a figure never needs a page the file system may not have (SIGBUS). Where they
    cannot be allocated, this process keeps its figures to itself (logged) and goes on."""
    folder = os.environ.get(METRICS_ENV)
    if not folder:
        return
    paths = [Path(folder) / f"{kind}_{os.getpid()}.db" for kind in METRIC_FILES]
    try:
        for path in paths:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, METRIC_FILE_BYTES)
            finally:
                os.close(fd)
    except OSError as exc:
        for path in paths:
            path.unlink(missing_ok=True)
        del os.environ[METRICS_ENV]
        log.error("could not allocate the metric files in %s (%s): this process's figures "
                  "are left out of /metrics", folder, exc)
