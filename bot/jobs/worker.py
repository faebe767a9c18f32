"""The worker's lease loop: claims jobs with a lease, runs them under a heartbeat, and records
every outcome. Its chores (bot/jobs/chores.py), reports (bot/jobs/reporting.py) and
housekeeping (bot/jobs/housekeeping.py) run between claims."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bot import logs
from bot.jobs.chores import GITHUB_AWAY, Chores
from bot.jobs.heartbeat import Heartbeat, Stop
from bot.jobs.housekeeping import Housekeeping, Task
from bot.jobs.outcome import JobDeferred, JobFailed, JobResult, Unreportable
from bot.jobs.persist import persist
from bot.jobs.record import JobRecord
from bot.jobs.reporting import ReportQueue
from bot.jobs.roles import Conversation, LogReporter, Reporter, Runner, UnconfiguredRunner
from bot.jobs.states import Failure, State
from bot.jobs.store import STORE_ERRORS, Job, LeaseLost, Store, is_full
from bot.jobs.worker_settings import WorkerSettings

# Re-exported for the executor and reporter, which import them from here until they move to
# bot.jobs.outcome and bot.jobs.roles.
__all__ = ["Conversation", "JobDeferred", "JobFailed", "JobResult", "LogReporter", "Reporter",
           "Runner", "UnconfiguredRunner", "Unreportable", "Worker", "WorkerSettings"]

log = logging.getLogger("handoff.worker")
T = TypeVar("T")


@dataclass(frozen=True)
class Ending:
    """How a run ended, to be recorded: the final state, why, and the result (None: keep the
    result the runner saved as it went)."""

    state: State
    reason: str = ""
    category: str = ""
    result: JobRecord | None = None


class HandedBack(Exception):
    """The run was stopped because the worker is stopping: the job goes back to the queue."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs up to ``settings.concurrency`` jobs at once from the store."""

    def __init__(
        self, store: Store, runner: Runner, reporter: Reporter,
        settings: WorkerSettings | None = None, *,
        on_start: Callable[[], Awaitable[object]] | None = None,
        on_stop: Callable[[], Awaitable[object]] | None = None,
        periodic: Sequence[tuple[float, Task]] = (),
        conversation: Conversation | None = None,
        after_end: Callable[[int], Awaitable[int | None]] | None = None,
    ) -> None:
        self.store, self.runner, self.reporter = store, runner, reporter
        self.settings = s = settings or WorkerSettings()
        self.id = worker_id()
        self.slots = s.concurrency  # jobs it may run at once now (0 once stopping)
        self.on_start, self.on_stop = on_start, on_stop
        # Called with a job's id once its end is recorded; returns a job it queued, if any.
        self.after_end = after_end
        self.chores = Chores(store, conversation)
        self.reports = ReportQueue(store, reporter, s)
        self.housekeeping = Housekeeping(periodic)
        self.heartbeat = Heartbeat(store, self.id, s.lease_seconds, s.heartbeat_seconds)
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.active: set[int] = set()
        self.runs: dict[int, asyncio.Task[JobResult]] = {}

    @property
    def unreportable_total(self) -> int:
        return self.reports.unreportable_total

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set, then wait for the jobs under way; last,
        ``on_stop`` closes what the worker was given (its GitHub connections)."""
        try:
            await self._run(stop)
        finally:
            if self.on_stop is not None:
                await self.on_stop()

    async def _run(self, stop: asyncio.Event) -> None:
        log.info("worker %s started (concurrency %s)", self.id, self.slots)
        if self.on_start is not None:
            log.info("start-up clean-up: %s", await self.on_start())
        failures = 0
        while not stop.is_set():
            self.wake.clear()  # before the round: a wake during it calls for another round
            try:
                await self._tick(stop)
                failures = 0
            except (*STORE_ERRORS, *GITHUB_AWAY):  # away for a moment: keep going
                failures += 1
                log.exception("worker loop failed (%d in a row); retrying", failures)
                await asyncio.sleep(min(self.settings.loop_backoff_max,
                                        self.settings.poll_seconds * 2 ** min(failures, 6)))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle(stop), self.settings.poll_seconds)
        if self.tasks:
            await self.drain()

    async def drain(self) -> None:
        """Stopping (SIGTERM): no new work; running jobs get ``shutdown_grace`` seconds to
        finish and report, and those still running then are handed back."""
        grace = self.settings.shutdown_grace
        if grace > 0 and self.tasks:
            log.info("worker %s stopping: %d running job(s) get %.0f s to finish", self.id,
                     len(self.runs), grace)
            await asyncio.wait(set(self.tasks), timeout=grace)
        if self.tasks:
            await self.hand_back()

    async def hand_back(self) -> None:
        """Stopping (SIGTERM): no new work; every running job is stopped and handed back to
        the queue (its stage kept, no attempt spent, its sandbox removed), within
        ``stop_seconds``."""
        log.info("worker %s stopping: handing back %d running job(s)", self.id, len(self.runs))
        for job_id, run in list(self.runs.items()):
            self.heartbeat.stopping[job_id] = Stop.HANDBACK
            run.cancel()
        done, pending = await asyncio.wait(set(self.tasks), timeout=self.settings.stop_seconds)
        if pending:
            log.error("worker %s: %d job(s) did not stop within %.0f s; leaving them to the "
                      "lease", self.id, len(pending), self.settings.stop_seconds)

    async def _tick(self, stop: asyncio.Event) -> None:
        """One round: housekeeping, chores, reports, claims, queue announcements."""
        await self.housekeeping.run_due()
        await self.chores.round()
        await self.reports.pending(exclude=self.active)
        while len(self.tasks) < self.slots and not stop.is_set():
            job = await self.store.claim(self.id, self.settings.lease_seconds,
                                         exclude=self.active)
            if job is None:
                break
            self.active.add(job.id)
            task = asyncio.create_task(self.process(job))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            task.add_done_callback(lambda _: self.wake.set())  # a free slot: claim again
        if len(self.tasks) >= self.slots:
            await self.chores.announce_queued()

    async def _idle(self, stop: asyncio.Event) -> None:
        waits = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def run_once(self) -> Job | None:
        """Claim one job and run it to the end; returns the job as it ended."""
        job = await self.store.claim(self.id, self.settings.lease_seconds)
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
        except STORE_ERRORS:  # the database refused for longer than a lease: never a silent stall
            log.exception("job %s: could not record how it ended; it is taken again when its "
                          "lease runs out", job.id)
        finally:
            self.active.discard(job.id)
            logs.unbind(bound)

    async def _persist(self, job_id: int, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """A store write for a job, tried again while the database refuses it, for up to a
        lease; then the error is raised."""
        return await persist(job_id, what, write, self.settings.lease_seconds,
                             min(1.0, self.settings.poll_seconds))

    async def _process(self, job: Job) -> None:
        try:
            end = await self._execute(job)
        except LeaseLost as exc:
            log.error("job %s: stopped, its lease is gone (%s); whoever holds it now goes on",
                      job.id, exc)
            return
        except HandedBack:
            await self._hand_back_one(job)
            return
        except JobDeferred as exc:
            if not exc.counts or job.deferrals < self.settings.max_deferrals:
                await self._defer(job, exc)
                return
            end = Ending(State.FAILED, exc.reason, Failure.GITHUB_ERROR, exc.result)
        if not await self._persist(job.id, "its end", lambda: self.store.finish(
                job.id, self.id, end.state, end.reason, end.category, end.result,
                job.lease_token, self.settings.report_hold_seconds)):
            log.warning("job %s: lease lost before it finished; another worker owns it",
                        job.id)
            return
        log.info("job %s ended %s%s", job.id, end.state,
                 f" ({end.category}: {end.reason})" if end.reason else "")
        await self._follow_up(job.id)
        await self.reports.report(job.id)

    async def _follow_up(self, job_id: int) -> None:
        """What a job's end starts (``after_end``: a CI fix noted while it ran)."""
        if self.after_end is None:
            return
        try:
            if await self.after_end(job_id) is not None:
                self.wake.set()
        except Exception:  # the job's own end is recorded; this one start is lost, and said
            log.exception("job %s: what its end starts could not be recorded", job_id)

    async def _defer(self, job: Job, deferred: JobDeferred) -> None:
        await self._persist(job.id, "its deferral", lambda: self.store.defer(
            job.id, self.id, deferred.until, deferred.reason, deferred.result or job.result,
            job.lease_token, deferred.stage, deferred.counts))
        log.warning("job %s waits until %s: %s", job.id,
                    time.strftime("%H:%M:%S", time.localtime(deferred.until)), deferred.reason)

    async def _hand_back_one(self, job: Job) -> None:
        fresh = await self.store.get_job(job.id)
        # Announced: a queue announcement would write over the status comment's "will resume".
        result = (fresh.result if fresh else job.result).with_(announced=True)
        if not await self._persist(job.id, "its hand-back", lambda: self.store.release(
                job.id, self.id, job.lease_token, result)):
            return
        if fresh is not None:
            fresh.result = result
        log.warning("job %s handed back to the queue (worker stopping); it resumes at stage "
                    "%r", job.id, fresh.stage if fresh else "")
        if fresh is not None:
            await self.chores.handed_back(fresh)

    async def _execute(self, job: Job) -> Ending:
        """Run the job under its heartbeat; returns how it ended. Raises HandedBack,
        LeaseLost or JobDeferred when it did not end."""
        if job.attempts > self.settings.max_attempts:
            return Ending(State.FAILED, f"the job was interrupted {job.attempts - 1} times (a "
                          "worker stopped mid-job); giving up", Failure.WORKER_LOST)
        if job.cancel_requested:
            return Ending(State.CANCELLED, job.reason or "cancelled", Failure.CANCELLED)
        run = asyncio.create_task(self.runner.run(job))
        self.runs[job.id] = run
        beat = asyncio.create_task(self.heartbeat.keep(job, run))
        try:
            outcome = await run
            return Ending(State.SUCCEEDED, result=outcome.result.with_(summary=outcome.summary))
        except JobFailed as exc:
            return Ending(State.FAILED, exc.reason, exc.category, exc.result)
        except (JobDeferred, LeaseLost):
            raise
        except asyncio.CancelledError:
            end = await self._stopped(job)
            if end is None:  # this task itself is being cancelled: that goes on up
                raise
            return end
        # The one place that catches what escapes a job: it ends failed, and says so.
        except Exception as exc:
            if is_full(exc):  # not the job's fault: it waits for space, no attempt spent
                raise JobDeferred(time.time() + self.settings.disk_full_wait,
                                  f"the disk is full ({exc}); the job goes on when there is "
                                  "space") from exc
            log.exception("job %s crashed", job.id)
            return Ending(State.FAILED, f"internal error: {type(exc).__name__}: {exc}",
                          Failure.INTERNAL)
        finally:
            beat.cancel()
            self.runs.pop(job.id, None)

    async def _stopped(self, job: Job) -> Ending | None:
        """The run was cancelled: by the heartbeat (a cancel, or its lease lost) or a
        hand-back; None if by neither."""
        why = self.heartbeat.stopping.pop(job.id, None)
        if why == Stop.CANCEL:
            fresh = await self.store.get_job(job.id)
            return Ending(State.CANCELLED, (fresh.reason if fresh else "") or "cancelled",
                          Failure.CANCELLED)
        if why == Stop.HANDBACK:
            raise HandedBack from None
        if why == Stop.LOST:
            raise LeaseLost("its lease could not be renewed") from None
        return None
