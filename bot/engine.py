"""The engine's ingest side: record a delivery and carry out the handlers' decision, atomically."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

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
    decision = decide(event, ctx)
    async with store.engine.begin() as conn:
        try:
            await store.insert_delivery(conn, event.delivery_id, event.name, event.action,
                                        event.repo)
        except DuplicateDelivery:
            return Outcome("duplicate", f"delivery {event.delivery_id} was already received")
        detail, job_id = await apply(store, conn, decision, event)
        await store.set_delivery_outcome(conn, event.delivery_id, detail, job_id)
    log.info("delivery %s %s.%s: %s", event.delivery_id, event.name, event.action or "-", detail)
    return Outcome("accepted", detail, job_id)


async def apply(
    store: Store, conn: AsyncConnection, decision: Decision, event: Event
) -> tuple[str, int | None]:
    """Carry out one decision; returns a line for the delivery log and the job touched."""
    match decision:
        case Ignore(reason=reason):
            return f"ignored: {reason}", None
        case Pong(zen=zen):
            return f"pong: {zen}", None
        case RecordInstallation():
            await store.record_installation(
                conn, decision.installation_id, decision.account, decision.action,
                decision.repositories_added, decision.repositories_removed)
            return f"installation {decision.installation_id} {decision.action}", None
        case StartJob():
            return await _start(store, conn, decision, event)
        case CancelJob():
            return await _cancel(store, conn, decision)
    raise TypeError(f"unknown decision {decision!r}")  # pragma: no cover


async def _start(
    store: Store, conn: AsyncConnection, d: StartJob, event: Event
) -> tuple[str, int | None]:
    values: dict[str, Any] = dict(
        kind=d.kind, repo=d.repo, installation_id=d.installation_id, requested_by=d.requested_by,
        trigger=d.trigger, feedback=d.feedback, context=d.context, delivery_id=event.delivery_id,
        pr_number=d.pr_number, issue_number=d.issue_number,
    )
    if d.pr_number is not None:
        origin = await store.agent_pr_origin(conn, d.repo, d.pr_number)
        if origin is None:
            return f"ignored: #{d.pr_number} is not an agent pull request", None
        values.update(issue_number=origin.issue_number, branch=origin.branch,
                      context={**d.context, "origin_job": origin.id})
    job_id = await store.insert_job(conn, **values)
    if job_id is None:
        active = await store.active_job(conn, d.repo, values["issue_number"])
        which = f"job {active.id} ({active.state})" if active else "another job"
        return f"recorded, not started: #{values['issue_number']} already has {which}", None
    return f"queued {d.kind} job {job_id}", job_id


async def _cancel(store: Store, conn: AsyncConnection, d: CancelJob) -> tuple[str, int | None]:
    issue_number = d.issue_number
    if issue_number is None and d.pr_number is not None:
        origin = await store.agent_pr_origin(conn, d.repo, d.pr_number)
        if origin is None:
            return f"ignored: #{d.pr_number} is not an agent pull request", None
        issue_number = origin.issue_number
    if issue_number is None:
        return "ignored: nothing to cancel", None
    touched = await store.cancel_jobs(conn, d.repo, issue_number, d.reason, d.only_queued)
    if not touched:
        return f"ignored: #{issue_number} has no active job to cancel", None
    return f"cancel requested for job(s) {touched}: {d.reason}", touched[0]
