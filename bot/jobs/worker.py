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
from bot.jobs.record import JobRecord
from bot.jobs.states import Failure
from bot.jobs.store import Job, LeaseLost, Store, is_full

log = logging.getLogger("handoff.worker")
T = TypeVar("T")
DISK_FULL_WAIT = 30.0  # seconds a job whose disk was full waits before it is tried again


class JobFailed(Exception):
    """A job cannot finish; ``category`` is what the check run and the comment name."""

    def __init__(self, category: str, reason: str, result: JobRecord | None = None) -> None:
        super().__init__(reason)
        self.category = category
        self.reason = reason
        self.result = result


class JobDeferred(Exception):
    """The job cannot go on before ``until`` (GitHub's rate limit, or GitHub away); it goes
    back in the queue, shown at ``stage``."""

    def __init__(self, until: float, reason: str, result: JobRecord | None = None,
                 stage: str = "rate-limited") -> None:
        super().__init__(reason)
        self.until, self.reason, self.result, self.stage = until, reason, result, stage


class Unreportable(Exception):
    """A job's end can never be posted (no installation, the App lost access, the repository
    is archived or gone): it is marked so instead of being retried."""


@dataclass
class JobResult:
    """What a successful job produced."""

    summary: str
    result: JobRecord = field(default_factory=JobRecord)


class Runner(Protocol):
    """Does the work of one job."""

    async def run(self, job: Job) -> JobResult: ...


class Conversation(Protocol):
    """Speaks for jobs on GitHub before and around their run (bot.reporter.conversation)."""

    async def announce(self, job: Job, position: int) -> int | None: ...

    async def not_permitted(self, job: Job) -> str: ...

    async def answer(self, request: dict[str, Any], job: Job, speak: bool) -> None: ...

    async def may_steer(self, job: Job, login: str) -> bool: ...

    async def refuse_cancel(self, job: Job) -> None: ...

    async def handed_back(self, job: Job) -> None: ...


class Reporter(Protocol):
    """Makes a job's final state visible to people; raises if it could not."""

    async def report(self, job: Job) -> None: ...


class UnconfiguredRunner:
    """The runner without a GitHub App: every job ends, visibly, saying what is missing."""

    async def run(self, job: Job) -> JobResult:
        raise JobFailed(Failure.NOT_CONFIGURED, "no GitHub App is configured, so no agent "
                        "can run: set HANDOFF_APP_ID and HANDOFF_PRIVATE_KEY (`handoff doctor` "
                        "shows what is missing), then relabel the issue")


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
        conversation: Conversation | None = None,
    ) -> None:
        self.store, self.runner, self.reporter = store, runner, reporter
        self.conversation = conversation
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
        self.runs: dict[int, asyncio.Task[JobResult]] = {}
        self.report_retry_seconds = 30.0  # the first back-off of a failed report; doubles
        self.report_retry_max = 3600.0
        self.max_report_attempts = 12  # about half a day of tries, then unreportable
        self.report_hold_seconds = 120.0  # a report being posted is not taken by another
        self.reports_per_round = 10
        self.unreportable_total = 0  # handoff_job_reports_unreportable_total, this process
        self.shutdown_grace = 0.0  # SIGTERM: how long running jobs may go on to finish
        self.stop_seconds = 20.0  # then: how long the rest get to hand themselves back
        self.max_deferrals = 5

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop`` is set, then wait for the jobs under way."""
        log.info("worker %s started (concurrency %s)", self.id, self.concurrency)
        if self.on_start is not None:
            log.info("start-up clean-up: %s", await self.on_start())
        failures = 0
        while not stop.is_set():
            self.wake.clear()  # before the round: a wake during it calls for another round
            try:
                await self._tick(stop)
                failures = 0
            except Exception:  # the database or GitHub away for a moment: keep going
                failures += 1
                log.exception("worker loop failed (%d in a row); retrying", failures)
                await asyncio.sleep(min(30.0, self.poll_seconds * 2 ** min(failures, 6)))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle(stop), self.poll_seconds)
        if self.tasks:
            await self.drain()

    async def drain(self) -> None:
        """Stopping (SIGTERM): no new work; running jobs get ``shutdown_grace`` seconds to
        finish and report, and those still running then are handed back."""
        if self.shutdown_grace > 0 and self.tasks:
            log.info("worker %s stopping: %d running job(s) get %.0f s to finish", self.id,
                     len(self.runs), self.shutdown_grace)
            await asyncio.wait(set(self.tasks), timeout=self.shutdown_grace)
        if self.tasks:
            await self.hand_back()

    async def hand_back(self) -> None:
        """Stopping (SIGTERM): no new work; every running job is stopped and handed back to
        the queue (its stage kept, no attempt spent, its sandbox removed), within
        ``stop_seconds``."""
        log.info("worker %s stopping: handing back %d running job(s)", self.id, len(self.runs))
        for job_id, run in list(self.runs.items()):
            self.stopping[job_id] = "handback"
            run.cancel()
        done, pending = await asyncio.wait(set(self.tasks), timeout=self.stop_seconds)
        if pending:
            log.error("worker %s: %d job(s) did not stop within %.0f s; leaving them to the "
                      "lease", self.id, len(pending), self.stop_seconds)

    async def _tick(self, stop: asyncio.Event) -> None:
        """One round: housekeeping, reports, claims, queue announcements."""
        await self.run_periodic()
        await self.review_arrivals()
        await self.review_cancels()
        await self.answer_requests()
        await self.report_pending()
        while len(self.tasks) < self.concurrency and not stop.is_set():
            job = await self.store.claim(self.id, self.lease_seconds, exclude=self.active)
            if job is None:
                break
            self.active.add(job.id)
            task = asyncio.create_task(self.process(job))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            task.add_done_callback(lambda _: self.wake.set())  # a free slot: claim again
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
        except LeaseLost as exc:
            log.error("job %s: stopped, its lease is gone (%s); whoever holds it now goes on",
                      job.id, exc)
            return
        except JobDeferred as exc:
            deferred = exc
            if job.deferrals < self.max_deferrals:
                await self._persist(job.id, "its deferral", lambda: self.store.defer(
                    job.id, self.id, deferred.until, deferred.reason,
                    deferred.result or job.result, job.lease_token, deferred.stage))
                log.warning("job %s waits until %s: %s", job.id,
                            time.strftime("%H:%M:%S", time.localtime(exc.until)), exc.reason)
                return
            state, reason, category, result = ("failed", exc.reason, "github-error",
                                               exc.result)
        if state == "handback":
            await self._hand_back_one(job)
            return
        if not await self._persist(job.id, "its end", lambda: self.store.finish(
                job.id, self.id, state, reason, category, result, job.lease_token,
                self.report_hold_seconds)):
            log.warning("job %s: lease lost before it finished; another worker owns it",
                        job.id)
            return
        log.info("job %s ended %s%s", job.id, state,
                 f" ({category}: {reason})" if reason else "")
        await self._report(job.id)

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
        if self.conversation is not None and fresh is not None:
            try:
                await self.conversation.handed_back(fresh)
            except Exception:  # a courtesy: the job resumes either way
                log.exception("job %s: could not say on GitHub that it will resume", job.id)

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

    async def _execute(self, job: Job) -> tuple[str, str, str, JobRecord | None]:
        """Run the job; returns state, reason, category and the result (None: keep the
        result the runner saved as it went)."""
        if job.attempts > self.max_attempts:
            return ("failed", f"the job was interrupted {job.attempts - 1} times (a worker "
                    "stopped mid-job); giving up", "worker-lost", None)
        if job.cancel_requested:
            return "cancelled", job.reason or "cancelled", "cancelled", None
        run = asyncio.create_task(self.runner.run(job))
        self.runs[job.id] = run
        beat = asyncio.create_task(self._heartbeat(job, run))
        try:
            outcome = await run
            return "succeeded", "", "", outcome.result.with_(summary=outcome.summary)
        except JobFailed as exc:
            return "failed", exc.reason, exc.category, exc.result
        except JobDeferred:
            raise
        except LeaseLost:
            raise
        except asyncio.CancelledError:
            why = self.stopping.pop(job.id, None)
            if why == "cancel":
                fresh = await self.store.get_job(job.id)
                return ("cancelled", (fresh.reason if fresh else "") or "cancelled", "cancelled",
                        None)
            if why == "handback":
                return "handback", "", "", None
            if why == "lost":
                raise LeaseLost("its lease could not be renewed") from None
            raise
        except Exception as exc:  # the one place that catches what escapes a job
            if is_full(exc):  # not the job's fault: it waits for space, no attempt spent
                raise JobDeferred(time.time() + DISK_FULL_WAIT, f"the disk is full ({exc}); "
                                  "the job goes on when there is space") from exc
            log.exception("job %s crashed", job.id)
            return "failed", f"internal error: {type(exc).__name__}: {exc}", "internal", None
        finally:
            beat.cancel()
            self.runs.pop(job.id, None)

    async def _heartbeat(self, job: Job, run: asyncio.Task[JobResult]) -> str:
        """Renew the lease every ``heartbeat_seconds``. A renewal that fails (the database
        locked or restarting) is tried again sooner; if none gets through before the lease
        could run out, the job is stopped first, so no other worker ever runs it at the same
        time as this one (its writes and pushes check the lease token too)."""
        renewed_at = time.monotonic()
        margin = min(self.heartbeat_seconds, self.lease_seconds / 4)
        delay = self.heartbeat_seconds
        failures = 0
        while True:
            await asyncio.sleep(delay)
            deadline = renewed_at + self.lease_seconds - margin
            tried_at = time.monotonic()
            try:
                renewed = await asyncio.wait_for(
                    self.store.heartbeat(job.id, self.id, self.lease_seconds, job.lease_token),
                    max(0.05, deadline - tried_at))
            except Exception as exc:  # the database away for a moment: try again soon
                failures += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("job %s: could not renew its lease for %.1f s (%d tries, last: "
                              "%s); stopping it before its lease runs out", job.id,
                              time.monotonic() - renewed_at, failures,
                              type(exc).__name__ if isinstance(exc, TimeoutError) else exc)
                    self.stopping[job.id] = "lost"
                    await self._stop(run)
                    return "lost"
                delay = max(0.05, min(self.heartbeat_seconds, left / 4))
                log.warning("job %s: could not renew its lease (%s); trying again in %.1f s "
                            "(%.1f s left)", job.id, type(exc).__name__ if isinstance(
                                exc, TimeoutError) else exc, delay, left)
                continue
            if failures:
                log.info("job %s: lease renewed after %d failed tries", job.id, failures)
            renewed_at, delay, failures = tried_at, self.heartbeat_seconds, 0
            if run.done():  # the job ended as this renewal ran (a lost cancel): nothing lost
                return "done"
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
        """Post the end of a job this worker just finished (finish() claimed its report)."""
        job = await self.store.get_job(job_id)
        if job is None or job.reported or job.unreportable:
            return
        await self._post_report(job)

    async def _post_report(self, job: Job) -> None:
        """Post a claimed report; on failure it backs off (per job, doubling) or, when it can
        never be posted, is marked unreportable."""
        tries = max(1, job.report_attempts)
        if job.category == Failure.NOT_PERMITTED and await self.store.refused_before(job):
            log.warning("job %s: @%s was told on %s#%s before that they may not ask; not "
                        "told again", job.id, job.requested_by, job.repo, job.issue_number)
            await self._persist(job.id, "that it was reported",
                                lambda: self.store.report_done(job.id))
            return
        try:
            await self.reporter.report(job)
        except Unreportable as exc:
            await self._give_up_report(job, str(exc))
            return
        except Exception as exc:  # GitHub away: retried by a later sweep; never lost
            if tries >= self.max_report_attempts:
                await self._give_up_report(job, f"{tries} tries failed, the last: {exc}")
                return
            wait = min(self.report_retry_max, self.report_retry_seconds * 2 ** (tries - 1))
            log.warning("job %s: could not report its outcome (try %d: %s); trying again in "
                        "%.0f s", job.id, tries, exc, wait)
            error, retry_at = f"{type(exc).__name__}: {exc}", time.time() + wait
            await self._persist(job.id, "its report's failure",
                                lambda: self.store.report_failed(job.id, error, retry_at))
            return
        await self._persist(job.id, "that it was reported",
                            lambda: self.store.report_done(job.id))

    async def _give_up_report(self, job: Job, why: str) -> None:
        self.unreportable_total += 1
        log.error("job %s (%s#%s, %s) can never be reported on GitHub: %s "
                  "[handoff_job_reports_unreportable_total=%d]", job.id, job.repo,
                  job.issue_number, job.state, why, self.unreportable_total)
        await self._persist(job.id, "that it cannot be reported",
                            lambda: self.store.report_failed(job.id, why, None))

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
        if self.conversation is None:
            return
        for position, job in enumerate(await self.store.queued(), start=1):
            if job.result.announced and job.result.position == position:
                continue  # said already, and its place has not changed
            if job.result.announced and job.stage not in ("", "queued", "rate-limited"):
                continue  # handed back mid-job: its status says it will resume; keep that
            # Claimed first: one worker announces, and a failing announcement is not retried
            # on every loop.
            claimed = job.result.with_(announced=True, position=position)
            if not await self.store.update_queued(job.id, unchanged_since=job.updated_at,
                                                  result=claimed):
                continue
            try:
                comment_id = await self.conversation.announce(job, position)
            except Exception:  # an announcement is a courtesy; the job still runs and reports
                log.exception("job %s: could not announce its queue position", job.id)
                continue
            if comment_id is not None:
                await self.store.update_queued(job.id, result=claimed.with_(
                    acknowledged=True, status_comment_id=comment_id))

    async def review_arrivals(self) -> None:
        """Check who asked for each newly queued job as it arrives, so a person without
        write access hears so at once instead of when the job's turn comes."""
        if self.conversation is None:
            return
        for job in await self.store.queued():
            if job.result.requester_checked or (job.not_before or 0) > time.time():
                continue
            try:
                why = await self.conversation.not_permitted(job)
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
                await self.store.refuse(job.id, why)
            else:
                await self.store.update_queued(
                    job.id, result=job.result.with_(requester_checked=True))

    async def answer_requests(self) -> None:
        """Answer the triggers and commands that reached a job under way: a reaction for
        people with write access, and a line for a second trigger, once a person a job.
        Others get no answer here (an outsider commenting again and again gets no replies;
        a refused /cancel hears once, from ``review_cancels``)."""
        if self.conversation is None:
            return
        for request in await self.store.unanswered_requests():
            if not await self.store.claim_request(int(request["id"])):
                continue  # another worker answers it
            login = str(request["requested_by"])
            try:
                job = await self.store.get_job(int(request["job_id"]))
                if job is None or not await self.conversation.may_steer(job, login):
                    continue
                speak = request["kind"] == "trigger" and \
                    await self.store.claim_reply(f"job:{job.id}", login)
                await self.conversation.answer(request, job, speak)
            except Exception:  # a courtesy: the job itself still reports
                log.exception("could not answer @%s's %s on job %s",
                              request["requested_by"], request["kind"], request["job_id"])

    async def review_cancels(self) -> None:
        """Carry out each cancel (a /cancel, or closing the issue while a job runs) whose
        author has write access; refuse the others, saying so once a person a job. Without a
        runner that can check, none is carried out."""
        for job in await self.store.cancel_requests():
            try:
                allowed = bool(self.conversation and job.cancel_by and
                               await self.conversation.may_steer(job, job.cancel_by))
            except Exception:  # GitHub away: the request stays and is checked next round
                log.exception("job %s: could not check who asked to cancel it", job.id)
                continue
            if not allowed:
                log.warning("job %s: cancel by @%s refused: no write access", job.id,
                            job.cancel_by)
                await self._refuse_cancel(job)
            await self.store.settle_cancel(job, allowed)

    async def _refuse_cancel(self, job: Job) -> None:
        if self.conversation is None or not job.cancel_by or \
                not await self.store.claim_reply(f"job:{job.id}", job.cancel_by):
            return
        try:
            await self.conversation.refuse_cancel(job)
        except Exception:  # a courtesy: the refused cancel is dropped either way
            log.exception("job %s: could not tell @%s their cancel was refused", job.id,
                          job.cancel_by)

    async def report_pending(self) -> None:
        """Report final jobs nobody reported yet (cancelled while queued, or a report that
        failed): each claimed first, so two workers never post the same one, the one waiting
        longest first, a few per round."""
        for _ in range(self.reports_per_round):
            job = await self.store.claim_report(self.report_hold_seconds, exclude=self.active)
            if job is None:
                return
            await self._post_report(job)
