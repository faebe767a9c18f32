"""A worker process for the crash test: ``python worker_proc.py DB_URL hang|finish``."""

from __future__ import annotations

import asyncio
import sys

from bot.jobs.store import Job, Store
from bot.jobs.worker import JobResult, LogReporter, Worker
from bot.jobs.worker_settings import WorkerSettings


class Runner:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def run(self, job: Job) -> JobResult:
        if self.mode == "hang":
            print(f"claimed {job.id}", flush=True)
            await asyncio.sleep(3600)
        return JobResult(summary=f"done by {self.mode}")


async def main(url: str, mode: str) -> None:
    store = await Store.open(url)
    worker = Worker(store, Runner(mode), LogReporter(), WorkerSettings(
        lease_seconds=1.5, heartbeat_seconds=0.3 if mode == "finish" else 3600, poll_seconds=0.1))
    while (job := await worker.run_once()) is None:
        await asyncio.sleep(0.1)
    print(f"ended {job.id} {job.state}", flush=True)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
