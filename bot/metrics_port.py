"""The metrics port's app: ``GET /metrics``, with the job and budget figures counted from the
database at each scrape (``bot.metrics`` holds the figures themselves, below every layer)."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from bot import metrics
from bot.jobs import schema
from bot.jobs.budgets import Budgets
from bot.jobs.states import State

log = logging.getLogger("handoff.web")
_counted: set[tuple[str, str]] = set()  # JOBS label pairs shown so far


async def refresh_jobs(store: Any) -> None:
    """Job counts by state and category, the queue's depth, and the reports not yet (or
    never) posted, from the database."""
    query = sa.select(schema.jobs.c.state, schema.jobs.c.category, sa.func.count()).group_by(
        schema.jobs.c.state, schema.jobs.c.category)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    counts = {(str(state), str(category or "")): int(count) for state, category, count in rows}
    # Set to 0, not cleared: a cleared label would live on in a multiprocess file.
    for labels in _counted | set(counts):
        metrics.JOBS.labels(*labels).set(counts.get(labels, 0))
    _counted.update(counts)
    queued = sum(n for (state, _), n in counts.items() if state == State.QUEUED)
    metrics.QUEUE_DEPTH.set(queued)
    for state, count in (await store.report_counts()).items():
        metrics.REPORTS.labels(state).set(count)
    await refresh_budgets(store)


async def refresh_budgets(store: Any) -> None:
    """Each monthly dollar cap and what its month has spent: two queries (the caps, the
    month's spend), however many caps there are."""
    budgets = Budgets(store.engine)
    caps = [cap for cap in await budgets.caps() if cap.dollars is not None]
    for use in await budgets.usages(caps) if caps else []:
        metrics.BUDGET_CAP.labels(use.cap.scope, use.cap.name).set(use.cap.dollars or 0.0)
        metrics.BUDGET_SPENT.labels(use.cap.scope, use.cap.name).set(use.dollars)


def endpoint(store: Any) -> Any:
    """``GET /metrics`` for an app around ``store``."""

    async def scrape(request: Request) -> Response:
        try:
            await refresh_jobs(store)
        except Exception:  # a scrape still shows the process's own figures
            log.exception("metrics: could not count jobs")
        return Response(metrics.generate(), media_type=CONTENT_TYPE_LATEST)

    return scrape


def app(store: Any) -> Any:
    """The app of the metrics port: ``GET /metrics`` and nothing else (never the webhook's)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route("/metrics", endpoint(store), methods=["GET"])])
