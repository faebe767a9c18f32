"""The worker: claims jobs with a lease, heartbeats them, runs them and records every outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bot import logs
from bot.store import Job, Store

log = logging.getLogger("handoff.worker")
T = TypeVar("T")


class JobFailed(Exception):
    """A job cannot finish; ``category`` is what the check run and the comment name."""

    def __init__(self, category: str, reason: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.category = category
        self.reason = reason
        self.result = result or {}


class JobDeferred(Exception):
    """The job cannot go on before ``until`` (GitHub's rate limit); it goes back in the queue."""

    def __init__(self, until: float, reason: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.until, self.reason, self.result = until, reason, result or {}


@dataclass
class JobResult:
    """What a successful job produced."""

    summary: str
    result: dict[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """Does the work of one job."""

    async def run(self, job: Job) -> JobResult: ...


class Reporter(Protocol):
    """Makes a job's final state visible to people; raises if it could not."""

    async def report(self, job: Job) -> None: ...


class UnconfiguredRunner:
    """The runner without a GitHub App: every job ends, visibly, saying what is missing."""

    async def run(self, job: Job) -> JobResult:
        raise JobFailed("not-configured", "no GitHub App is configured, so no agent can run: set "
                        "HANDOFF_APP_ID and HANDOFF_PRIVATE_KEY (`handoff doctor` shows what "
                        "is missing), then relabel the issue")


class LogReporter:
    """Reports final states to the log only (used when no GitHub App is configured)."""

    async def report(self, job: Job) -> None:
        log.warning("job %s %s#%s ended %s: %s", job.id, job.repo, job.issue_number, job.state,
                    job.reason or "ok")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs up to ``concurrency`` jobs at once from the store."""

    def __init__(
        self, store: Store, runner: Runner, reporter: Reporter, *, concurrency: int = 2,
        lease_seconds: float = 60, heartbeat_seconds: float = 15, poll_seconds: float = 1,
        max_attempts: int = 3, on_start: Callable[[], Awaitable[object]] | None = None,
        periodic: list[tuple[float, Callable[[], Awaitable[object]]]] | None = None,
    ) -> None:
        self.store, self.runner, self.reporter = store, runner, reporter
        self.concurrency = concurrency
        self.lease_seconds, self.heartbeat_seconds = lease_seconds, heartbeat_seconds
        self.poll_seconds, self.max_attempts = poll_seconds, max_attempts
        self.id = worker_id()
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.active: set[int] = set()
        self.stopping: dict[int, str] = {}  # job id -> why the heartbeat stopped it
        self.on_start = on_start
        self.periodic = periodic or []  # (every seconds, task), first run at start-up
        self.next_run = [0.0] * len(self.periodic)
        self.report_after: dict[int, float] = {}
        self.report_retry_seconds = 30.0
        self.max_deferrals = 5

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set, then wait for the jobs under way."""
        log.info("worker %s started (concurrency %s)", self.id, self.concurrency)
        if self.on_start is not None:
            log.info("start-up clean-up: %s", await self.on_start())
        failures = 0
        while not stop.is_set():
            try:
                await self._tick(stop)
                failures = 0
            except Exception:  # the database or GitHub away for a moment: keep going
                failures += 1
                log.exception("worker loop failed (%d in a row); retrying", failures)
                await asyncio.sleep(min(30.0, self.poll_seconds * 2 ** min(failures, 6)))
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle(stop), self.poll_seconds)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _tick(self, stop: asyncio.Event) -> None:
        """One round: housekeeping, reports, claims, queue announcements."""
        await self.run_periodic()
        await self.review_arrivals()
        await self.review_cancels()
        await self.report_pending()
        while len(self.tasks) < self.concurrency and not stop.is_set():
            job = await self.store.claim(self.id, self.lease_seconds, exclude=self.active)
            if job is None:
                break
            self.active.add(job.id)
            task = asyncio.create_task(self.process(job))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if len(self.tasks) >= self.concurrency:
            await self.announce_queued()

    async def _idle(self, stop: asyncio.Event) -> None:
        waits = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def run_once(self) -> Job | None:
        """Claim one job and run it to the end; returns the job as it ended."""
        job = await self.store.claim(self.id, self.lease_seconds)
        if job is None:
            return None
        await self.process(job)
        return await self.store.get_job(job.id)

    async def process(self, job: Job) -> None:
        """Run one claimed job and record how it ended, whatever happens."""
        self.active.add(job.id)
        bound = logs.bind(job=job.id, repo=job.repo)
        try:
            await self._process(job)
        except Exception:  # the database refused for longer than a lease: never a silent stall
            log.exception("job %s: could not record how it ended; it is taken again when its "
                          "lease runs out", job.id)
        finally:
            self.active.discard(job.id)
            logs.unbind(bound)

    async def _process(self, job: Job) -> None:
        try:
            state, reason, category, result = await self._execute(job)
        except JobDeferred as exc:
            deferred = exc
            if job.deferrals < self.max_deferrals:
                await self._persist(job.id, "its deferral", lambda: self.store.defer(
                    job.id, self.id, deferred.until, deferred.reason,
                    {**job.result, **deferred.result}))
                log.warning("job %s waits until %s: %s", job.id,
                            time.strftime("%H:%M:%S", time.localtime(exc.until)), exc.reason)
                return
            state, reason, category, result = ("failed", exc.reason, "github-error",
                                               exc.result)
        if not await self._persist(job.id, "its end", lambda: self.store.finish(
                job.id, self.id, state, reason, category, result)):
            log.warning("job %s: lease lost before it finished; another worker owns it",
                        job.id)
            return
        log.info("job %s ended %s%s", job.id, state,
                 f" ({category}: {reason})" if reason else "")
        await self._report(job.id)

    async def _persist(self, job_id: int, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """A store write for a job, tried again while the database refuses it, for up to a
        lease; then the error is raised."""
        deadline = time.monotonic() + self.lease_seconds
        delay = min(1.0, self.poll_seconds)
        while True:
            try:
                return await write()
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("job %s: could not record %s (%s); trying again in %.1f s",
                            job_id, what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _execute(self, job: Job) -> tuple[str, str, str, dict[str, Any] | None]:
        """Run the job; returns state, reason, category and the result (None: keep the
        result the runner saved as it went)."""
        if job.attempts > self.max_attempts:
            return ("failed", f"the job was interrupted {job.attempts - 1} times (a worker "
                    "stopped mid-job); giving up", "worker-lost", None)
        if job.cancel_requested:
            return "cancelled", job.reason or "cancelled", "cancelled", None
        run = asyncio.create_task(self.runner.run(job))
        beat = asyncio.create_task(self._heartbeat(job, run))
        try:
            outcome = await run
            return "succeeded", "", "", {"summary": outcome.summary, **outcome.result}
        except JobFailed as exc:
            return "failed", exc.reason, exc.category, exc.result
        except JobDeferred:
            raise
        except asyncio.CancelledError:
            if self.stopping.pop(job.id, None) == "cancel":
                fresh = await self.store.get_job(job.id)
                return ("cancelled", (fresh.reason if fresh else "") or "cancelled", "cancelled",
                        None)
            raise
        except Exception as exc:  # the one place that catches what escapes a job
            log.exception("job %s crashed", job.id)
            return "failed", f"internal error: {type(exc).__name__}: {exc}", "internal", None
        finally:
            beat.cancel()

    async def _heartbeat(self, job: Job, run: asyncio.Task[JobResult]) -> str:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                renewed = await self.store.heartbeat(job.id, self.id, self.lease_seconds)
            except Exception:  # the lease has time left: renew at the next beat
                log.exception("job %s: could not renew its lease; trying at the next beat",
                              job.id)
                continue
            if renewed is None:
                log.error("job %s: lease lost; stopping", job.id)
                self.stopping[job.id] = "lost"
                await self._stop(run)
                return "lost"
            if renewed:
                self.stopping[job.id] = "cancel"
                await self._stop(run)
                return "cancel"

    async def _stop(self, run: asyncio.Task[JobResult]) -> None:
        """Cancel the run, again if need be: a cancellation can be lost in a race inside
        asyncio (Python 3.11's wait_for), and a job must not go on after /cancel."""
        while not run.done():
            run.cancel()
            await asyncio.wait({run}, timeout=self.heartbeat_seconds)

    async def _report(self, job_id: int) -> None:
        job = await self.store.get_job(job_id)
        if job is None:
            return
        try:
            await self.reporter.report(job)
        except Exception:  # reporting is retried by a later sweep; never lost
            log.exception("job %s: could not report its outcome yet; will retry", job_id)
            self.report_after[job_id] = time.monotonic() + self.report_retry_seconds
            return
        self.report_after.pop(job_id, None)
        await self._persist(job_id, "that it was reported",
                            lambda: self.store.update_job(job_id, reported=True))

    async def run_periodic(self) -> None:
        """Housekeeping that is due (the redelivery sweep, forgetting old deliveries)."""
        for index, (every, task) in enumerate(self.periodic):
            if time.monotonic() < self.next_run[index]:
                continue
            self.next_run[index] = time.monotonic() + every
            try:
                await task()
            except Exception:  # housekeeping failing must not stop the worker; try next time
                log.exception("periodic task %s failed", getattr(task, "__name__", task))

    async def announce_queued(self) -> None:
        """Tell people whose jobs wait behind others where they stand in the queue."""
        announce = getattr(self.runner, "announce", None)
        if announce is None:
            return
        for position, job in enumerate(await self.store.queued(), start=1):
            if job.result.get("announced"):
                continue
            # Marked first, so a failing announcement is not retried on every loop.
            await self.store.update_job(job.id, result={**job.result, "announced": True})
            try:
                await announce(job, position)
            except Exception:  # an announcement is a courtesy; the job still runs and reports
                log.exception("job %s: could not announce its queue position", job.id)

    async def review_arrivals(self) -> None:
        """Check who asked for each newly queued job as it arrives, so a person without
        write access hears so at once instead of when the job's turn comes."""
        not_permitted = getattr(self.runner, "not_permitted", None)
        if not_permitted is None:
            return
        for job in await self.store.queued():
            if job.result.get("requester_checked") or (job.not_before or 0) > time.time():
                continue
            try:
                why = await not_permitted(job)
            except Exception as exc:  # GitHub away: checked next round, and again when it runs
                if (until := getattr(exc, "retry_at", None)) is not None:  # a long rate limit
                    await self.store.update_queued(job.id, stage="rate-limited",
                                                   not_before=until, reason=str(exc),
                                                   deferrals=job.deferrals + 1)
                    log.warning("job %s waits for GitHub's rate limit: %s", job.id, exc)
                    continue
                log.exception("job %s: could not check who asked for it", job.id)
                continue
            if why:
                await self.store.update_queued(job.id, state="failed", reason=why,
                                               category="not-permitted",
                                               finished_at=time.time())
            else:
                await self.store.update_queued(
                    job.id, result={**job.result, "requester_checked": True})

    async def review_cancels(self) -> None:
        """Carry out each /cancel whose author has write access; refuse the others (the
        runner answers them on GitHub). Without a runner that can check, none is carried out."""
        may_cancel = getattr(self.runner, "may_cancel", None)
        for job in await self.store.cancel_requests():
            try:
                allowed = bool(may_cancel and await may_cancel(job))
            except Exception:  # GitHub away: the request stays and is checked next round
                log.exception("job %s: could not check who asked to cancel it", job.id)
                continue
            if not allowed:
                log.warning("job %s: /cancel by @%s refused: no write access", job.id,
                            job.cancel_by)
            await self.store.settle_cancel(job, allowed)

    async def report_pending(self) -> None:
        """Report final jobs nobody reported yet (cancelled while queued, or report failed)."""
        for job in await self.store.unreported():
            if job.id not in self.active and \
                    self.report_after.get(job.id, 0) <= time.monotonic():
                await self._report(job.id)
