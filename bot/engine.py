"""The engine's ingest side: record a delivery and carry out the handlers' decision, atomically."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bot.decisions import CancelJob, Decision, Event, Ignore, Pong, RecordInstallation, StartJob
from bot.store import DuplicateDelivery, Store
from handlers import Context, decide

log = logging.getLogger("handoff.engine")


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery."""

    status: str  # accepted | duplicate
    detail: str
    job_id: int | None = None


async def ingest(store: Store, ctx: Context, event: Event) -> Outcome:
    """Persist the delivery and the decision it leads to in one transaction."""
    return await store.write(lambda conn: ingest_in(store, conn, ctx, event))


def ingest_in(store: Store, conn: sa.Connection, ctx: Context, event: Event) -> Outcome:
    """Record one delivery and carry out its decision inside the caller's transaction."""
    decision = decide(event, ctx)
    try:
        store.insert_delivery(conn, event.delivery_id, event.name, event.action, event.repo)
    except DuplicateDelivery:
        return Outcome("duplicate", f"delivery {event.delivery_id} was already received")
    detail, job_id = apply(store, conn, decision, event)
    store.set_delivery_outcome(conn, event.delivery_id, detail, job_id)
    log.debug("delivery %s %s.%s: %s", event.delivery_id, event.name, event.action or "-",
              detail)
    return Outcome("accepted", detail, job_id)


class Ingestor:
    """Group commit: deliveries that arrive together are written in one transaction.

    Each caller still gets its answer only after the transaction holding its delivery has
    committed, so nothing is acknowledged before it is durable. One writer also keeps SQLite
    free of lock contention between concurrent requests.
    """

    def __init__(self, store: Store, ctx: Context, max_batch: int = 256) -> None:
        self.store, self.ctx, self.max_batch = store, ctx, max_batch
        self.queue: asyncio.Queue[tuple[Event, asyncio.Future[Outcome]]] = asyncio.Queue()
        self.writer: asyncio.Task[None] | None = None

    async def submit(self, event: Event) -> Outcome:
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write_forever())
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self.queue.put((event, future))
        return await future

    async def _write_forever(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < self.max_batch:
                batch.append(self.queue.get_nowait())
            try:
                await self._write(batch)
            except Exception:  # one bad delivery must not fail its neighbours: retry alone
                for item in batch:
                    await self._write_alone(item)

    async def _write(self, batch: list[tuple[Event, asyncio.Future[Outcome]]]) -> None:
        events = [event for event, _ in batch]
        outcomes = await self.store.write(
            lambda conn: [ingest_in(self.store, conn, self.ctx, ev) for ev in events])
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _write_alone(self, item: tuple[Event, asyncio.Future[Outcome]]) -> None:
        event, future = item
        try:
            await self._write([item])
        except Exception as exc:  # reported to that one caller as a 500
            log.exception("delivery %s could not be recorded", event.delivery_id)
            if not future.done():
                future.set_exception(exc)


def apply(
    store: Store, conn: sa.Connection, decision: Decision, event: Event
) -> tuple[str, int | None]:
    """Carry out one decision; returns a line for the delivery log and the job touched."""
    match decision:
        case Ignore(reason=reason):
            return f"ignored: {reason}", None
        case Pong(zen=zen):
            return f"pong: {zen}", None
        case RecordInstallation():
            store.record_installation(
                conn, decision.installation_id, decision.account, decision.action,
                decision.repositories_added, decision.repositories_removed)
            return f"installation {decision.installation_id} {decision.action}", None
        case StartJob():
            return _start(store, conn, decision, event)
        case CancelJob():
            return _cancel(store, conn, decision)
    raise TypeError(f"unknown decision {decision!r}")  # pragma: no cover


def _start(
    store: Store, conn: sa.Connection, d: StartJob, event: Event
) -> tuple[str, int | None]:
    values: dict[str, Any] = dict(
        kind=d.kind, repo=d.repo, installation_id=d.installation_id, requested_by=d.requested_by,
        trigger=d.trigger, feedback=d.feedback, context=d.context, delivery_id=event.delivery_id,
        pr_number=d.pr_number, issue_number=d.issue_number,
    )
    if d.pr_number is not None:
        origin = store.agent_pr_origin(conn, d.repo, d.pr_number)
        if origin is None:
            return f"ignored: #{d.pr_number} is not an agent pull request", None
        values.update(issue_number=origin.issue_number, branch=origin.branch,
                      context={**d.context, "origin_job": origin.id})
    job_id = store.insert_job(conn, **values)
    if job_id is None:
        active = store.active_job(conn, d.repo, values["issue_number"])
        which = f"job {active[0]} ({active[1]})" if active else "another job"
        return f"recorded, not started: #{values['issue_number']} already has {which}", None
    return f"queued {d.kind} job {job_id}", job_id


def _cancel(store: Store, conn: sa.Connection, d: CancelJob) -> tuple[str, int | None]:
    issue_number = d.issue_number
    if issue_number is None and d.pr_number is not None:
        origin = store.agent_pr_origin(conn, d.repo, d.pr_number)
        if origin is None:
            return f"ignored: #{d.pr_number} is not an agent pull request", None
        issue_number = origin.issue_number
    if issue_number is None:
        return "ignored: nothing to cancel", None
    touched = store.cancel_jobs(conn, d.repo, issue_number, d.reason, d.only_queued)
    if not touched:
        return f"ignored: #{issue_number} has no active job to cancel", None
    return f"cancel requested for job(s) {touched}: {d.reason}", touched[0]
