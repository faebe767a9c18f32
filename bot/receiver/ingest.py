"""Ingest: record deliveries and carry out the handlers' decisions, atomically."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bot import logs
from bot.jobs.schema import jobs
from bot.jobs.states import ACTIVE_STATES
from bot.jobs.store import DuplicateDelivery, Job, Store, StoreBusy
from bot.receiver import ci_gate
from handlers import Context, HandlerError, decide
from handlers.vocabulary import (
    CI_FIX,
    CancelJob,
    Decision,
    Event,
    Ignore,
    Pong,
    RecordEdit,
    RecordInstallation,
    StartJob,
)

log = logging.getLogger("handoff.ingest")
REPLAYS = logs.Throttle(60.0)  # a replay is logged at most once a minute, with a count


@dataclass(slots=True)
class Outcome:
    """What became of one delivery."""

    status: str  # accepted | duplicate | rejected
    detail: str
    job_id: int | None = None


def already_has(issue_number: int, active: tuple[int, str] | None) -> str:
    """The outcome of a trigger for an issue whose job is queued or running already."""
    which = f"job {active[0]} ({active[1]})" if active else "another job"
    return f"recorded, not started: #{issue_number} already has {which}"


def duplicate(event: Event) -> Outcome:
    return Outcome("duplicate", f"delivery {event.delivery_id} was already received")


async def ingest(store: Store, ctx: Context, event: Event) -> Outcome:
    """Persist the delivery and the decision it leads to in one transaction."""
    return (await store.write(lambda conn: record(store, conn, ctx, [event])))[0]


def record(store: Store, conn: sa.Connection, ctx: Context, events: list[Event]
           ) -> list[Outcome]:
    """Record deliveries and carry out their decisions, in order, inside the caller's
    transaction. A delivery id seen before is answered as a duplicate and acted on no more."""
    return _Recorder(store, conn).run(ctx, events)


@dataclass
class _Target:
    """Where a job decision lands: the issue, and the agent PR's latest job if on a PR."""

    issue_number: int | None
    origin: Job | None = None


class _Recorder:
    """Records one batch of deliveries.

    Most deliveries change nothing but their own record: events no handler wants, an edit of
    an issue with no job. Their outcome is known after reads alone, so they are held back and
    inserted together in one statement, which also tells which of them were duplicates. A
    delivery that does change something (a new job, a second trigger to answer, a cancel, an
    installation) is recorded alone, first, so a duplicate is caught before it acts; the held
    ones are written before it to keep the order.
    """

    def __init__(self, store: Store, conn: sa.Connection) -> None:
        self.store, self.conn = store, conn
        self.held: list[tuple[int, Event, str]] = []
        self.outcomes: dict[int, Outcome] = {}
        self.active: dict[tuple[str, int], tuple[int, str] | None] = {}  # reads this batch

    def run(self, ctx: Context, events: list[Event]) -> list[Outcome]:
        for index, event in enumerate(events):
            decision = decide(event, ctx)
            target = self.target(decision)
            detail = self.outcome_without_writes(decision, target)
            if detail is not None:
                self.held.append((index, event, detail))
            else:
                self.write_held()
                self.outcomes[index] = self.act(event, decision, target)
                self.active.clear()  # what this delivery wrote may change later reads
            log.debug("delivery %s %s.%s: %s", event.delivery_id, event.name,
                      event.action or "-", detail or "acted on",
                      extra={"delivery": event.delivery_id})
        self.write_held()
        return [self.outcomes[i] for i in range(len(events))]

    def target(self, decision: Decision) -> _Target:
        if not isinstance(decision, StartJob | CancelJob):
            return _Target(None)
        if isinstance(decision, StartJob) and decision.kind == CI_FIX and \
                decision.issue_number is not None:  # its branch names the issue
            return _Target(decision.issue_number, ci_gate.origin_of(
                self.conn, decision.repo, decision.issue_number))
        if decision.pr_number is None:
            return _Target(decision.issue_number)
        origin = self.store.agent_pr_origin(self.conn, decision.repo, decision.pr_number)
        return _Target(origin.issue_number if origin else None, origin)

    def outcome_without_writes(self, decision: Decision, target: _Target) -> str | None:
        """The delivery's outcome if recording it is all there is to do, else None."""
        match decision:
            case Ignore(reason=reason):
                return f"ignored: {reason}"
            case Pong(zen=zen):
                return f"pong: {zen}"
            case StartJob(kind=kind, repo=repo, issue_number=number) if kind == CI_FIX and \
                    number is not None:
                if why := ci_gate.why_not(self.conn, decision, self.active_job(repo, number)):
                    return f"ignored: {why}"
            case StartJob() | CancelJob() if decision.pr_number is not None and \
                    target.origin is None:
                return f"ignored: #{decision.pr_number} is not an agent pull request"
            case StartJob() | CancelJob() if target.issue_number is None:
                return "ignored: the event names no issue or pull request"
            case RecordEdit(repo=repo, issue_number=number):
                if self.active_job(repo, number) is None:
                    return f"ignored: #{number} has no active job to tell of the edit"
        return None

    def active_job(self, repo: str, issue_number: int) -> tuple[int, str] | None:
        key = (repo, issue_number)
        if key not in self.active:
            self.active[key] = self.store.active_job(self.conn, repo, issue_number)
        return self.active[key]

    def write_held(self) -> None:
        if not self.held:
            return
        now = time.time()
        new = self.store.insert_deliveries(self.conn, [
            (e.delivery_id, e.name, e.action, e.repo, detail[:2000], None, now)
            for _, e, detail in self.held])
        for index, event, detail in self.held:
            if event.delivery_id in new:
                new.discard(event.delivery_id)  # a second copy in this batch is a duplicate
                self.outcomes[index] = Outcome("accepted", detail)
            else:
                self.outcomes[index] = duplicate(event)
        self.held.clear()

    def act(self, event: Event, decision: Decision, target: _Target) -> Outcome:
        try:
            self.store.insert_delivery(self.conn, event.delivery_id, event.name, event.action,
                                       event.repo)
        except DuplicateDelivery:
            return duplicate(event)  # GitHub's own redelivery: the same id
        if why := replay(self.store, self.conn, event, decision, target):
            if (held := REPLAYS.ready()) is not None:  # one body can be sent at any rate
                log.warning("delivery %s refused: %s%s", event.delivery_id, why,
                            f"; {held} more replays refused in the last minute" if held else "",
                            extra={"delivery": event.delivery_id})
            self.store.set_delivery_outcome(self.conn, event.delivery_id, f"refused: {why}")
            return Outcome("duplicate", f"refused: {why}")
        detail, job_id = apply(self.store, self.conn, decision, event, target)
        self.store.set_delivery_outcome(self.conn, event.delivery_id, detail, job_id)
        return Outcome("accepted", detail, job_id)


class Ingestor:
    """Group commit: deliveries that arrive together are written in one transaction.

    Each caller still gets its answer only after the transaction holding its delivery has
    committed, so nothing is acknowledged before it is durable. One writer also keeps SQLite
    free of lock contention between concurrent requests.
    """

    def __init__(self, store: Store, ctx: Context, max_batch: int = 256) -> None:
        self.store, self.ctx, self.max_batch = store, ctx, max_batch
        self.pending: list[tuple[Event, asyncio.Future[Outcome]]] = []
        self.wakeup: asyncio.Future[None] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def submit(self, event: Event) -> asyncio.Future[Outcome]:
        """Queue a delivery; the future holds its outcome once its batch is committed."""
        loop = self.loop
        if loop is None or self.writer is None or self.writer.done():
            loop = self.loop = asyncio.get_running_loop()  # kept: each lookup costs a getpid()
            self.writer = loop.create_task(self._write_forever())
        future: asyncio.Future[Outcome] = loop.create_future()
        self.pending.append((event, future))
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)
        return future

    async def close(self) -> None:
        """Stop the writer (the server has answered its last request, so nothing waits)."""
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.writer

    async def _write_forever(self) -> None:
        while True:
            if not self.pending:
                self.wakeup = asyncio.get_running_loop().create_future()
                await self.wakeup
            # Let the requests already read off the sockets join before committing: one
            # commit (and fsync) then serves all of them instead of a few.
            seen = 0
            while seen != len(self.pending) < self.max_batch:
                seen = len(self.pending)
                await asyncio.sleep(0)
            batch = self.pending[:self.max_batch]
            del self.pending[:self.max_batch]
            try:
                await self._write(batch)
            except StoreBusy as exc:  # retried for Store.busy_seconds already: all get a 500
                self._refuse(batch, exc)
            except Exception:  # one bad delivery must not fail its neighbours: retry alone
                for item in batch:
                    await self._write_alone(item)

    async def _write(self, batch: list[tuple[Event, asyncio.Future[Outcome]]]) -> None:
        events = [event for event, _ in batch]
        outcomes = await self.store.write(
            lambda conn: record(self.store, conn, self.ctx, events))
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _write_alone(self, item: tuple[Event, asyncio.Future[Outcome]]) -> None:
        event, future = item
        try:
            await self._write([item])
        except Exception as exc:
            # The database away, or a handler's bug: a 500, so GitHub shows a failed delivery
            # and the redelivery sweep brings it back.
            if unavailable(exc) or isinstance(exc, HandlerError):
                log.exception("delivery %s (%s.%s) could not be recorded", event.delivery_id,
                              event.name[:64], event.action[:64] or "-",
                              extra={"delivery": event.delivery_id})
                if not future.done():
                    future.set_exception(exc)
                return
            # The payload itself cannot be handled (a value out of range, an odd shape): it
            # is recorded as refused and the sender hears why, with a 4xx.
            why = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            log.warning("delivery %s (%r) refused: %s", event.delivery_id, event.name[:64], why,
                        extra={"delivery": event.delivery_id})
            try:
                await self.reject(event.name, event.delivery_id, why)
            except Exception as again:  # recording fails too: a 500
                log.exception("delivery %s could not be recorded", event.delivery_id,
                              extra={"delivery": event.delivery_id})
                if not future.done():
                    future.set_exception(again)
                return
            if not future.done():
                future.set_result(Outcome("rejected", f"refused: the payload cannot be handled "
                                          f"({why})"))

    async def reject(self, name: str, delivery_id: str, why: str) -> None:
        """Record a signed delivery that is refused, with why (its text made storable)."""
        row = (clean(delivery_id, 64), clean(name, 64), "", "", clean(f"refused: {why}", 2000),
               None, time.time())
        await self.store.write(lambda conn: self.store.insert_deliveries(conn, [row]))

    @staticmethod
    def _refuse(batch: list[tuple[Event, asyncio.Future[Outcome]]], exc: StoreBusy) -> None:
        """Answer a batch the database would not take with a 500, each delivery logged by
        name: GitHub's log shows the failure and the redelivery sweep asks for it again."""
        for event, future in batch:
            log.error("delivery %s (%s.%s) could not be recorded: %s", event.delivery_id,
                      event.name, event.action or "-", exc, extra={"delivery": event.delivery_id})
            if not future.done():
                future.set_exception(exc)


def clean(text: str, limit: int) -> str:
    """Text any database stores: no NUL (PostgreSQL refuses it), at most ``limit`` long."""
    return text.replace("\x00", "\ufffd")[:limit]


def unavailable(exc: BaseException) -> bool:
    """The database is away, locked or full (a 500: try again later), as opposed to a payload
    it cannot take (a 4xx)."""
    if isinstance(exc, StoreBusy | OSError | TimeoutError | sa.exc.OperationalError |
                  sa.exc.InterfaceError | sqlite3.OperationalError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


def digest(event: Event) -> str:
    """The signed body's SHA-256 (empty for events made without one, e.g. ``handoff replay``)."""
    return hashlib.sha256(event.body).hexdigest() if event.body else ""


def replay(store: Store, conn: sa.Connection, event: Event, decision: Decision,
           target: _Target) -> str:
    """Why this delivery is a replay of a captured one (its body seen before under another
    delivery id: neither header is signed), or "". Checked for deliveries that change
    something only, so the webhook's common path hashes nothing."""
    if not (body := digest(event)):
        return ""
    if (first := store.replayed(conn, body, event.delivery_id)) is not None:
        return f"the same signed body came as delivery {first}; a replay, not new work"
    if isinstance(decision, StartJob) and target.issue_number is not None and \
            store.last_job_digest(conn, decision.repo, target.issue_number) == body:
        return (f"#{target.issue_number}'s last job started from this very body; a replay, "
                "not a new request")
    return ""


def apply(
    store: Store, conn: sa.Connection, decision: Decision, event: Event, target: _Target
) -> tuple[str, int | None]:
    """Carry out a decision that writes; returns a line for the delivery log and the job."""
    match decision:
        case RecordInstallation():
            store.record_installation(
                conn, decision.installation_id, decision.account, decision.action,
                decision.repositories_added, decision.repositories_removed)
            return f"installation {decision.installation_id} {decision.action}", None
        case StartJob(kind=kind) if kind == CI_FIX and target.issue_number is not None and \
                (active := store.active_job(conn, decision.repo, target.issue_number)):
            return ci_gate.note(conn, active[0], decision, event.delivery_id), active[0]
        case StartJob() if target.issue_number is not None:
            return _start(store, conn, decision, event, target.issue_number, target.origin)
        case CancelJob() if target.issue_number is not None:
            return _cancel(store, conn, decision, target.issue_number)
        case RecordEdit():
            job_id = store.record_edit(conn, decision.repo, decision.issue_number, {
                "by": decision.editor, "title": decision.title, "body": decision.body})
            return f"edit by @{decision.editor} noted on job {job_id}", job_id
    raise TypeError(f"no write to make for {decision!r}")  # pragma: no cover


def _start(store: Store, conn: sa.Connection, d: StartJob, event: Event, issue_number: int,
           origin: Job | None) -> tuple[str, int | None]:
    context = {**d.context, **({"payload_sha256": body} if (body := digest(event)) else {})}
    values: dict[str, Any] = dict(
        kind=d.kind, repo=d.repo, installation_id=d.installation_id, requested_by=d.requested_by,
        trigger=d.trigger, feedback=d.feedback, context=context, delivery_id=event.delivery_id,
        pr_number=d.pr_number, issue_number=issue_number,
    )
    if d.kind == CI_FIX and origin is not None:  # on behalf of who handed the issue over
        values.update(requested_by=origin.requested_by, pr_number=origin.pr_number)
    if origin is not None:  # an iteration keeps the issue text its first job worked from
        snap = origin.result.inputs.issue_snapshot or origin.context.get("issue_snapshot")
        values.update(branch=origin.branch, context={
            **context, "origin_job": origin.id, **({"issue_snapshot": snap} if snap else {})})
        values.update(again(origin, d, values["context"]))
    job_id = store.insert_job(conn, **values)
    if job_id is None and origin is not None and same_review(origin, d):
        # a review's comments come one by one; the job under way takes them all
        return f"recorded: job {origin.id} takes up review {d.context['review_id']}", None
    if job_id is None:  # the issue has a job under way: its requester hears so
        active = store.active_job(conn, d.repo, issue_number)
        if active is not None:
            store.add_request(conn, active[0], d.repo, d.pr_number or issue_number, "trigger",
                              d.requested_by, d.context.get("comment_id"))
        return already_has(issue_number, active), None  # it started no job
    return f"queued {d.kind} job {job_id}", job_id


def follow_up(store: Store, conn: sa.Connection, job_id: int) -> int | None:
    """After a job ended: a check that failed on the commit it pushed, while it was under way,
    starts its ``ci-fix`` now (if it still may). Returns the new job's id."""
    row = conn.execute(jobs.select().where(jobs.c.id == job_id)).first()
    job = Job.from_row(row) if row is not None else None
    check = ci_gate.noted(job) if job is not None else None
    if job is None or check is None:
        return None
    decision = StartJob(kind=CI_FIX, repo=job.repo, installation_id=job.installation_id,
                        issue_number=job.issue_number, requested_by=job.requested_by,
                        pr_number=job.pr_number, trigger="ci",
                        context={k: v for k, v in check.items() if k != "delivery"})
    active = store.active_job(conn, job.repo, job.issue_number)
    if why := ci_gate.why_not(conn, decision, active):
        log.info("job %s: the check noted on it starts nothing: %s", job_id, why)
        return None
    origin = ci_gate.origin_of(conn, job.repo, job.issue_number)
    event = Event("check_run", {}, delivery_id=str(check.get("delivery", "")))
    detail, new = _start(store, conn, decision, event, job.issue_number, origin)
    log.info("job %s: %s for the check noted on it", job_id, detail)
    return new


# Where an iteration's request was made, so a Re-run answers it there again.
REQUEST_KEYS = ("comment_id", "review_comment_id", "thread_id", "review_id")


def again(origin: Job, d: StartJob, context: dict[str, Any]) -> dict[str, Any]:
    """"Re-run" on the check run of the PR's latest iteration: that iteration's request
    again (its kind, feedback and where it was asked), for whoever pressed the button."""
    if d.trigger != "rerun" or str(d.context.get("rerun_of")) != str(origin.id) or \
            origin.kind == "implement":
        return {}
    asked = {k: origin.context[k] for k in REQUEST_KEYS if k in origin.context}
    return {"kind": origin.kind, "feedback": origin.feedback, "context": {**context, **asked}}


def same_review(origin: Job, d: StartJob) -> bool:
    """Whether the PR's latest job is under way for the very review this event belongs to
    (GitHub sends a review and each of its inline comments as events of their own)."""
    review = d.context.get("review_id")
    return review is not None and origin.state in ACTIVE_STATES and \
        origin.context.get("review_id") == review and d.kind == origin.kind == "review"


def _cancel(store: Store, conn: sa.Connection, d: CancelJob, issue_number: int
            ) -> tuple[str, int | None]:
    if d.command:
        asked = store.request_cancel(conn, d.repo, issue_number, d.requested_by)
        if not asked:
            return f"ignored: #{issue_number} has no active job to cancel", None
        store.add_request(conn, asked[0], d.repo, d.pr_number or issue_number, "cancel",
                          d.requested_by, d.comment_id)
        return (f"cancel of job(s) {asked} asked by @{d.requested_by}; it acts once their "
                "write access is confirmed"), asked[0]
    if d.check_running:
        return _close(store, conn, d, issue_number)
    touched = store.cancel_jobs(conn, d.repo, issue_number, d.reason, d.only_queued)
    if not touched:
        return f"ignored: #{issue_number} has no active job to cancel", None
    return f"cancel requested for job(s) {touched}: {d.reason}", touched[0]


def _close(store: Store, conn: sa.Connection, d: CancelJob, issue_number: int
           ) -> tuple[str, int | None]:
    """The issue was closed: its queued job ends now; a running one stops only once the
    closer is found to have write access (else it goes on, and the closer hears why)."""
    queued = store.cancel_jobs(conn, d.repo, issue_number, d.reason, only_queued=True)
    running = store.request_cancel(conn, d.repo, issue_number, d.requested_by, d.reason,
                                   states=("running",))
    if not queued and not running:
        return f"ignored: #{issue_number} has no active job to cancel", None
    detail = f"cancelled queued job(s) {queued}: {d.reason}" if queued else ""
    if running:
        detail += ("; " if detail else "") + (
            f"stop of running job(s) {running} asked by @{d.requested_by}; it acts once their "
            "write access is confirmed")
    return detail, (queued or running)[0]
