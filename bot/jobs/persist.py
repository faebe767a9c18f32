"""A worker's store write for a job, waited out while the database refuses it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.jobs.store import STORE_ERRORS

log = logging.getLogger("handoff.worker")
T = TypeVar("T")
MAX_RETRY_DELAY = 10.0  # seconds between tries at most: a lease is about a minute


async def persist(job_id: int, what: str, write: Callable[[], Awaitable[T]], patience: float,
                  first_delay: float) -> T:
    """Run ``write``, again while the database refuses it (doubling the wait from
    ``first_delay``), for up to ``patience`` seconds (a lease); then the error is raised."""
    deadline = time.monotonic() + patience
    delay = first_delay
    while True:
        try:
            return await write()
        except STORE_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("job %s: could not record %s (%s); trying again in %.1f s",
                        job_id, what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_DELAY)
