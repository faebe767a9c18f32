"""One job in flight: its record and the lease-checked writes of it. What a step finds it
returns (``bot.executor.steps``); nothing is left here for later steps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from bot import logs, metrics
from bot.github.client import GitHubApiError, RepoClient
from bot.jobs.record import JobRecord
from bot.jobs.spend import Spend
from bot.jobs.store import Job, Leases
from bot.reporter.checks import ProgressCheck
from bot.reporter.status import StatusComment

log = logging.getLogger("handoff.executor")


@dataclass
class Run:
    """One job's record (what is stored) and its writes, each checked against the lease."""

    job: Job
    gh: RepoClient
    store: Leases  # the job's row, written only while its lease holds
    record: JobRecord
    status: StatusComment | None = None
    check: ProgressCheck | None = None  # Handoff's in-progress check run on the PR's head
    # What the job must close whatever happens (its sandboxes): closed by ``clean_up``.
    closing: contextlib.AsyncExitStack[None] = field(default_factory=contextlib.AsyncExitStack)
    last_mark: float = field(default_factory=time.monotonic)

    def mark(self, stage: str) -> None:
        """Record how long the stage that just ended took (``record.timings``)."""
        now = time.monotonic()
        self.record.timings[stage] = round(now - self.last_mark, 3)
        metrics.STAGE_SECONDS.labels(stage).observe(now - self.last_mark)
        self.last_mark = now

    async def write(self, **columns: Any) -> None:
        """Every write of a running job checks its lease token (LeaseLost if it is gone)."""
        await self.store.update_held(self.job.id, self.job.lease_token, **columns)

    async def save(self, **columns: Any) -> None:
        await self.write(result=self.record, **columns)

    async def stage(self, stage: str, detail: str = "", force: bool = True) -> None:
        """Enter a stage: logged, shown in the status comment, saved (so a job taken over
        after a crash keeps its status comment)."""
        logs.enter_stage(stage)
        if self.status is not None:
            await self.show(self.status.set(stage, detail, force=force))
        if self.check is not None:
            await self.check.step(stage, detail)
        await self.write(stage=stage, result=self.record)

    async def progress(self, spend: Spend) -> None:
        """The agent's steps and spend so far, in the status comment."""
        if self.status is not None:
            await self.show(self.status.agent_progress(spend))

    async def show(self, edit: Awaitable[None]) -> None:
        """A status comment edit, best-effort: one GitHub refuses or does not answer is
        logged and the job goes on (the next edit carries the latest text)."""
        try:
            await edit
        except GitHubApiError as exc:
            log.warning("job %s: the status comment could not be edited (%s); going on",
                        self.job.id, exc)
        if self.status is not None:
            self.record.status_comment_id = self.status.comment_id


async def finish_despite_cancel(work: Awaitable[None]) -> None:
    """Run clean-up to its end even when the job is cancelled (again) meanwhile, so no
    sandbox or workspace outlives a cancelled job; the cancellation is raised afterwards."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError
