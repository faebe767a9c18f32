"""The whole of Handoff wired together on 127.0.0.1: simulator, receiver, worker, scripted
model and a real sandbox. Used by the end-to-end tests and bench/pipeline.py."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.agent.scripted import ScriptedModel
from bot.config import Settings
from bot.services import build_worker
from bot.serving import running
from bot.simulator import Simulator
from bot.store import Job, Store
from bot.web import create_app
from bot.worker import Worker
from handlers import Context

SECRET = "e2e-webhook-secret"
MODEL_KEY = "sk-e2e-canary-9d8c7b6a5f4e3d2c"


@dataclass
class Stack:
    sim: Simulator
    store: Store
    model: ScriptedModel
    worker: Worker
    settings: Settings

    async def wait_job(self, predicate: Callable[[Job], bool], timeout: float = 90) -> Job:
        """Wait for a job that ended, was reported (or cannot be) and matches; deliveries
        settle first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.sim.settle()
            for job in await self.store.list_jobs(50):
                if job.state in ("succeeded", "failed", "cancelled") and \
                        (job.reported or job.unreportable) \
                        and predicate(job):
                    return job
            await asyncio.sleep(0.2)
        jobs = [(j.id, j.state, j.stage, j.reason) for j in await self.store.list_jobs(50)]
        raise AssertionError(f"no matching job ended in {timeout}s: {jobs}")


@asynccontextmanager
async def stack(tmp: Path, script: list[dict[str, Any]], repeat_last: bool = False,
                **overrides: Any) -> AsyncIterator[Stack]:
    """Handoff serving webhooks from the simulator, with a worker, a model and Podman."""
    async with AsyncExitStack() as stack:
        model = ScriptedModel(script, repeat_last=repeat_last, api_key=MODEL_KEY)
        model_url = await stack.enter_async_context(running(model.app))
        store = await Store.open(f"sqlite+aiosqlite:///{tmp / 'handoff.db'}")
        stack.push_async_callback(store.close)
        sim = Simulator(tmp / "github", webhook_secret=SECRET)
        sim_url = await stack.enter_async_context(running(sim.app))
        sim.base_url = sim_url
        settings = Settings(
            app_id=str(sim.world.app_id), private_key=SecretStr(sim.private_key),
            webhook_secret=SecretStr(SECRET), github_url=sim_url, data_dir=tmp / "data",
            model_provider="openai", model_base_url=f"{model_url}/v1", model_name="scripted-1",
            model_api_key=SecretStr(MODEL_KEY), prices={"scripted-1": (3.0, 15.0)},
            sandbox="podman",
            sandbox_image=os.environ.get("HANDOFF_SANDBOX_IMAGE", "handoff-sandbox:dev"),
            sandbox_memory_mb=512, command_timeout=60, status_interval=0.0,
            github_write_interval=0.0, poll_seconds=0.2, heartbeat_seconds=1, **overrides)
        worker = build_worker(settings, store)
        worker.periodic = []  # no redelivery sweep: it would spend the simulator's faults
        app = create_app(store, SECRET.encode(), Context(settings.trigger_label,
                                                         settings.bot_login),
                         on_job=worker.wake.set)
        handoff_url = await stack.enter_async_context(running(app))
        sim.webhook_url = f"{handoff_url}/webhook"
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(stop))

        async def halt() -> None:
            stop.set()
            await asyncio.wait_for(task, 60)

        stack.push_async_callback(halt)
        yield Stack(sim, store, model, worker, settings)
