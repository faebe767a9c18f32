"""A running job's heartbeat: renews its lease, and stops the run when it must not go on."""

from __future__ import annotations

import asyncio
import logging
import time
from enum import StrEnum
from typing import Any

from bot.jobs.store import STORE_ERRORS, Job, Leases

log = logging.getLogger("handoff.worker")
MIN_WAIT = 0.05  # seconds: the shortest wait between renewals, and for one renewal


class Stop(StrEnum):
    """Why a run was stopped from outside it."""

    CANCEL = "cancel"  # a checked cancel asked it to
    HANDBACK = "handback"  # the worker is stopping
    LOST = "lost"  # its lease could not be renewed
    DONE = "done"  # not stopped: the run ended as the heartbeat ran


class Heartbeat:
    """Keeps the leases of one worker's runs."""

    def __init__(self, store: Leases, owner: str, lease_seconds: float,
                 every: float) -> None:
        self.store, self.owner = store, owner
        self.lease_seconds, self.every = lease_seconds, every
        self.stopping: dict[int, Stop] = {}  # job id -> why its run was stopped

    async def keep(self, job: Job, run: asyncio.Task[Any]) -> Stop:
        """Renew the lease every ``every`` seconds. A renewal that fails (the database
        locked or restarting) is tried again sooner; if none gets through before the lease
        could run out, the job is stopped first, so no other worker ever runs it at the same
        time as this one (its writes and pushes check the lease token too)."""
        renewed_at = time.monotonic()
        margin = min(self.every, self.lease_seconds / 4)
        delay = self.every
        failures = 0
        while True:
            await asyncio.sleep(delay)
            deadline = renewed_at + self.lease_seconds - margin
            tried_at = time.monotonic()
            try:
                renewed = await asyncio.wait_for(
                    self.store.heartbeat(job.id, self.owner, self.lease_seconds,
                                         job.lease_token),
                    max(MIN_WAIT, deadline - tried_at))
            except STORE_ERRORS as exc:  # the database away for a moment: try again soon
                failures += 1
                left = deadline - time.monotonic()
                why = type(exc).__name__ if isinstance(exc, TimeoutError) else exc
                if left <= 0:
                    log.error("job %s: could not renew its lease for %.1f s (%d tries, last: "
                              "%s); stopping it before its lease runs out", job.id,
                              time.monotonic() - renewed_at, failures, why)
                    return await self.stop(job.id, run, Stop.LOST)
                delay = max(MIN_WAIT, min(self.every, left / 4))
                log.warning("job %s: could not renew its lease (%s); trying again in %.1f s "
                            "(%.1f s left)", job.id, why, delay, left)
                continue
            if failures:
                log.info("job %s: lease renewed after %d failed tries", job.id, failures)
            renewed_at, delay, failures = tried_at, self.every, 0
            if run.done():  # the job ended as this renewal ran (a lost cancel): nothing lost
                return Stop.DONE
            if renewed is None:
                log.error("job %s: lease lost; stopping", job.id)
                return await self.stop(job.id, run, Stop.LOST)
            if renewed:
                return await self.stop(job.id, run, Stop.CANCEL)

    async def stop(self, job_id: int, run: asyncio.Task[Any], why: Stop) -> Stop:
        """Cancel the run, noting why, again if need be: a cancellation can be lost in a race
        inside asyncio (Python 3.11's wait_for), and a job must not go on after /cancel."""
        self.stopping[job_id] = why
        while not run.done():
            run.cancel()
            await asyncio.wait({run}, timeout=self.every)
        return why
