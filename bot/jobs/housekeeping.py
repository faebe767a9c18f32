"""Periodic housekeeping of a worker: the tasks wiring gives it (reaping orphaned sandboxes,
the redelivery sweep, forgetting old deliveries), each run when due."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("handoff.worker")
Task = Callable[[], Awaitable[object]]


class Housekeeping:
    """Runs each ``(every seconds, task)`` when due; the first round at start-up."""

    def __init__(self, tasks: Sequence[tuple[float, Task]] = ()) -> None:
        self.tasks = list(tasks)
        self.next_run = [0.0] * len(self.tasks)

    async def run_due(self) -> None:
        """Run the tasks that are due; one that fails is logged and tried when next due."""
        for index, (every, task) in enumerate(self.tasks):
            if time.monotonic() < self.next_run[index]:
                continue
            self.next_run[index] = time.monotonic() + every
            try:
                await task()
            # Each task is another subsystem (the sandbox backend, GitHub, the store) with
            # errors of its own; none may stop the worker. Logged with its traceback.
            except Exception:
                log.exception("periodic task %s failed", getattr(task, "__name__", task))
