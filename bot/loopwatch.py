"""Event-loop stall watch: a thread notices when the loop has not run for a while and logs
where it is stuck (the loop thread's stack), so a stall is never silent.

The receiver answers every webhook from one event loop; anything that blocks it (a slow
fsync, CPU work without a thread) holds every delivery up. ``handoff_event_loop_lag_seconds``
shows how late the loop's heartbeat ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator

from bot import metrics

log = logging.getLogger("handoff.loop")
TICK = 0.05


class LoopWatch:
    """Beats on the loop every ``TICK``; a thread reports a beat later than ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.last = time.monotonic()
        self.loop_thread = threading.get_ident()
        self.stopped = threading.Event()
        self.reported = False

    async def beat(self) -> None:
        while True:
            now = time.monotonic()
            metrics.LOOP_LAG.observe(max(0.0, now - self.last - TICK))
            if self.reported:
                log.warning("event loop ran again after %.0f ms", (now - self.last) * 1000)
                self.reported = False
            self.last = now
            await asyncio.sleep(TICK)

    def watch(self) -> None:
        while not self.stopped.wait(self.threshold / 4):
            lag = time.monotonic() - self.last
            if lag > self.threshold and not self.reported:
                self.reported = True
                frame = sys._current_frames().get(self.loop_thread)
                where = "".join(traceback.format_stack(frame, limit=12)) if frame else "?"
                log.warning("event loop blocked for %.0f ms so far, in:\n%s", lag * 1000, where)


@contextlib.asynccontextmanager
async def watching(threshold: float) -> AsyncIterator[None]:
    """Watch the running loop for stalls longer than ``threshold`` seconds (0: off)."""
    if threshold <= 0:
        yield
        return
    watch = LoopWatch(threshold)
    beat = asyncio.create_task(watch.beat())
    thread = threading.Thread(target=watch.watch, name="loopwatch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        watch.stopped.set()
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
