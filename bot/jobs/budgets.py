"""Monthly budgets across jobs: caps per organisation, repository and person, in dollars and
in jobs, kept in the store and checked when a job starts (and given to its agent as a limit).

A month is a calendar month in UTC. What a month has spent is summed from the jobs created in
it: the dollars their agents recorded (a running job's so far) and how many started.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.jobs.schema import budgets, jobs

SCOPES = {"org": "organisation", "repo": "repository", "person": "person"}


@dataclass(frozen=True)
class Cap:
    scope: str
    name: str
    dollars: float | None
    jobs: int | None


@dataclass(frozen=True)
class Usage:
    """One cap and what its month has used of it."""

    cap: Cap
    dollars: float
    jobs: int

    @property
    def dollars_left(self) -> float | None:
        return None if self.cap.dollars is None else max(0.0, self.cap.dollars - self.dollars)

    def used_up(self) -> bool:
        return ((self.cap.dollars is not None and self.dollars >= self.cap.dollars)
                or (self.cap.jobs is not None and self.jobs >= self.cap.jobs))

    def line(self) -> str:
        parts = []
        if self.cap.dollars is not None:
            parts.append(f"${self.dollars:.2f} of ${self.cap.dollars:.2f}")
        if self.cap.jobs is not None:
            parts.append(f"{self.jobs} of {self.cap.jobs} jobs")
        return f"{SCOPES[self.cap.scope]} {self.cap.name}: {', '.join(parts)}"


class OverBudget(Exception):
    """A cap this job falls under is used up for the month."""

    def __init__(self, usage: Usage, resets: float) -> None:
        self.usage, self.resets = usage, resets
        when = time.strftime("%Y-%m-%d", time.gmtime(resets))
        super().__init__(
            f"The monthly budget of the {usage.line()} is used up. It resets on {when} (UTC); "
            f"an operator can raise it with `handoff budgets set {usage.cap.scope} "
            f"{usage.cap.name} ...`.")


def month_bounds(now: float | None = None) -> tuple[float, float]:
    """The start of this calendar month (UTC) and of the next, as timestamps."""
    t = time.gmtime(time.time() if now is None else now)
    start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(start), float(calendar.timegm((year, month, 1, 0, 0, 0)))


def scopes_of(repo: str, person: str) -> list[tuple[str, str]]:
    """The caps a job on ``repo`` asked for by ``person`` falls under."""
    return [("org", repo.split("/", 1)[0].lower()), ("repo", repo.lower()),
            ("person", person.lower())]


class Budgets:
    """The caps, and the month's use of each, over the job store's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def set(self, scope: str, name: str, dollars: float | None, count: int | None
                  ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        values: dict[str, Any] = dict(dollars=dollars, jobs=count, updated_at=time.time())
        async with self.engine.begin() as conn:
            where = sa.and_(budgets.c.scope == scope, budgets.c.name == name.lower())
            if (await conn.execute(budgets.update().where(where).values(**values))).rowcount:
                return
            await conn.execute(budgets.insert().values(scope=scope, name=name.lower(),
                                                       **values))

    async def remove(self, scope: str, name: str) -> bool:
        async with self.engine.begin() as conn:
            return bool((await conn.execute(budgets.delete().where(
                budgets.c.scope == scope, budgets.c.name == name.lower()))).rowcount)

    async def caps(self, keys: list[tuple[str, str]] | None = None) -> list[Cap]:
        query = sa.select(budgets).order_by(budgets.c.scope, budgets.c.name)
        if keys is not None:
            query = query.where(sa.tuple_(budgets.c.scope, budgets.c.name).in_(keys))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Cap(r.scope, r.name, r.dollars, r.jobs) for r in rows]

    async def usage(self, cap: Cap, exclude_job: int | None = None,
                    now: float | None = None) -> Usage:
        """What the month has used of ``cap`` (without ``exclude_job``, the one asking)."""
        start, _ = month_bounds(now)
        repo, person = sa.func.lower(jobs.c.repo), sa.func.lower(jobs.c.requested_by)
        match = {"org": repo.like(f"{cap.name}/%"), "repo": repo == cap.name,
                 "person": person == cap.name}[cap.scope]
        query = sa.select(jobs.c.started_at, jobs.c.result).where(
            match, jobs.c.created_at >= start)
        if exclude_job is not None:
            query = query.where(jobs.c.id != exclude_job)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        dollars = sum(r.result.agent.spend.cost_usd for r in rows)
        started = sum(1 for r in rows if r.started_at is not None)
        return Usage(cap, round(dollars, 6), started)

    async def usages(self, caps: list[Cap], now: float | None = None) -> list[Usage]:
        """What the month has used of each of ``caps``, from one query (the month's spend
        and started jobs grouped by repository and person), however many caps there are."""
        start, _ = month_bounds(now)
        repo, person = sa.func.lower(jobs.c.repo), sa.func.lower(jobs.c.requested_by)
        # A record's spend; a flat (version 0 or 1) record kept it at the top.
        cost = sa.func.coalesce(jobs.c.result["agent"]["spend"]["cost_usd"].as_float(),
                                jobs.c.result["spend"]["cost_usd"].as_float(), 0.0)
        query = sa.select(repo, person, sa.func.sum(cost), sa.func.count(jobs.c.started_at)
                          ).where(jobs.c.created_at >= start).group_by(repo, person)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        spent: dict[tuple[str, str], list[float]] = {}
        for repo_name, login, dollars, started in rows:
            for key in scopes_of(str(repo_name), str(login or "")):
                total = spent.setdefault(key, [0.0, 0])
                total[0] += float(dollars or 0.0)
                total[1] += int(started)
        return [Usage(cap, round(spent.get((cap.scope, cap.name), [0.0])[0], 6),
                      int(spent.get((cap.scope, cap.name), [0.0, 0])[1])) for cap in caps]

    async def check(self, job_id: int, repo: str, person: str,
                    now: float | None = None) -> float | None:
        """Raise OverBudget when a cap this job falls under is used up; else the fewest
        dollars any of them has left (None: no dollar cap), the most the job may spend."""
        left: list[float] = []
        for cap in await self.caps(scopes_of(repo, person)):
            use = await self.usage(cap, exclude_job=job_id, now=now)
            if use.used_up():
                raise OverBudget(use, month_bounds(now)[1])
            if use.dollars_left is not None:
                left.append(use.dollars_left)
        return min(left) if left else None
