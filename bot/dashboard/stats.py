"""What the dashboard's charts show, read from the jobs table: per day, per repository, per
stage, and the queue over time, for the jobs one viewer may see and the filters they chose."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bot.dashboard.signin import Viewer
from bot.jobs.schema import jobs
from bot.jobs.states import State
from bot.jobs.store import Job, Jobs

DAY = 86400.0
WINDOWS = (7, 14, 30, 90)
MAX_ROWS = 5000
STATES = tuple(s.value for s in State)
OUTCOMES = (State.SUCCEEDED.value, State.FAILED.value, State.CANCELLED.value, "active")


@dataclass(frozen=True)
class Filters:
    """The jobs page's query: repository, person, state, free text, and days shown."""

    repo: str = ""
    person: str = ""
    state: str = ""
    q: str = ""
    days: int = 14

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Filters:
        try:
            days = int(params.get("days", "14"))
        except ValueError:
            days = 14
        state = params.get("state", "")
        return cls(repo=params.get("repo", "").strip()[:255],
                   person=params.get("person", "").strip().lstrip("@")[:255],
                   state=state if state in STATES else "", q=params.get("q", "").strip()[:200],
                   days=days if days in WINDOWS else 14)

    @property
    def any(self) -> bool:
        return bool(self.repo or self.person or self.state or self.q)


def _where(viewer: Viewer, filters: Filters, state: str = "") -> list[sa.ColumnElement[bool]]:
    out: list[sa.ColumnElement[bool]] = []
    if viewer.repos is not None:
        out.append(sa.func.lower(jobs.c.repo).in_(sorted(viewer.repos) or [""]))
    if filters.repo:
        out.append(sa.func.lower(jobs.c.repo) == filters.repo.lower())
    if filters.person:
        out.append(sa.func.lower(jobs.c.requested_by) == filters.person.lower())
    if state or filters.state:
        out.append(jobs.c.state == (state or filters.state))
    if filters.q:
        like = f"%{filters.q.lower().replace('%', '').replace('_', '')}%"
        text: list[sa.ColumnElement[bool]] = [sa.func.lower(c).like(like) for c in (
            jobs.c.repo, jobs.c.requested_by, jobs.c.reason, jobs.c.category, jobs.c.kind,
            jobs.c.branch)]
        number = filters.q.lstrip("#")
        if number.isdigit():
            text += [jobs.c.issue_number == int(number), jobs.c.pr_number == int(number),
                     jobs.c.id == int(number)]
        out.append(sa.or_(*text))
    return out


async def _select(store: Jobs, query: sa.Select[Any]) -> list[Job]:
    async with store.engine.connect() as conn:
        return [Job.from_row(r) for r in (await conn.execute(query)).all()]


async def window_jobs(store: Jobs, viewer: Viewer, filters: Filters, now: float) -> list[Job]:
    """The viewer's jobs created in the last ``filters.days`` days that match the filters."""
    query = jobs.select().where(jobs.c.created_at >= now - filters.days * DAY,
                                *_where(viewer, filters)).order_by(jobs.c.id.desc())
    return await _select(store, query.limit(MAX_ROWS))


async def recent_jobs(store: Jobs, viewer: Viewer, filters: Filters, state: str = "",
                      limit: int = 100) -> list[Job]:
    """The newest matching jobs of any age (queued ones oldest first)."""
    order = jobs.c.id if state == State.QUEUED else jobs.c.id.desc()
    query = jobs.select().where(*_where(viewer, filters, state)).order_by(order)
    return await _select(store, query.limit(limit))


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile of some values (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


@dataclass
class Summary:
    """The numbers behind every chart."""

    days: list[str]
    outcomes: dict[str, list[int]]
    cost_per_day: list[float]
    cost_per_repo: list[tuple[str, float]]
    stages: list[tuple[str, float, float, int]]  # name, p50, p95, jobs
    success_per_day: list[float | None]
    queue: list[tuple[float, int]]  # (time, queued jobs)
    totals: dict[str, Any] = field(default_factory=dict)


def outcome(job: Job) -> str:
    return job.state if job.state in OUTCOMES else "active"


def summarize(window: list[Job], days: int, now: float) -> Summary:
    first = math.floor(now / DAY) - days + 1
    labels = [day_of((first + n) * DAY) for n in range(days)]
    index = {d: n for n, d in enumerate(labels)}
    outcomes = {o: [0] * days for o in OUTCOMES}
    cost = [0.0] * days
    per_repo: dict[str, float] = defaultdict(float)
    stages: dict[str, list[float]] = defaultdict(list)
    for job in window:
        n = index.get(day_of(job.created_at))
        spent = job.result.agent.spend.cost_usd
        per_repo[job.repo] += spent
        for name, seconds in job.result.timings.items():
            stages[name].append(float(seconds))
        if n is not None:
            outcomes[outcome(job)][n] += 1
            cost[n] += spent
    success = [s / (s + f) if s + f else None
               for s, f in zip(outcomes["succeeded"], outcomes["failed"], strict=True)]
    ended = sum(outcomes["succeeded"]) + sum(outcomes["failed"])
    return Summary(
        days=labels, outcomes=outcomes, cost_per_day=cost,
        cost_per_repo=sorted(per_repo.items(), key=lambda kv: -kv[1])[:10],
        stages=[(name, percentile(v, 0.5), percentile(v, 0.95), len(v))
                for name, v in stages.items()],
        success_per_day=success, queue=queue_over_time(window, first * DAY, now),
        totals={"jobs": len(window), "cost": sum(per_repo.values()),
                "success": sum(outcomes["succeeded"]) / ended if ended else None})


def queue_over_time(window: list[Job], start: float, now: float,
                    points: int = 96) -> list[tuple[float, int]]:
    """How many jobs waited at evenly spaced moments: each waits from its creation until it
    started (or ended without starting)."""
    events: list[tuple[float, int]] = []
    for job in window:
        left = job.started_at or job.finished_at
        events.append((job.created_at, 1))
        if left is not None:
            events.append((max(left, job.created_at), -1))
    events.sort()
    step = max(1.0, (now - start) / (points - 1))
    out, waiting, i = [], 0, 0
    for n in range(points):
        moment = start + n * step
        while i < len(events) and events[i][0] <= moment:
            waiting += events[i][1]
            i += 1
        out.append((moment, waiting))
    return out
