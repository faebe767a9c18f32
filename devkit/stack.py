"""The whole of Handoff wired together on 127.0.0.1: simulator, receiver, worker, scripted
model and a real sandbox. Used by the end-to-end tests and bench/pipeline.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot import dashboard
from bot.backup import debian_postgres
from bot.config import Settings
from bot.jobs.states import FINAL
from bot.jobs.store import Job, Store
from bot.jobs.worker import Worker
from bot.receiver.web import create_app
from bot.server import running
from bot.wiring import build_worker
from devkit.scripted import ScriptedModel
from devkit.simulator import Simulator
from devkit.simulator.outage import served
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

    def label_new_issue(self, repo: str, title: str, body: str, by: str = "acme") -> int:
        """Open an issue and label it for the agent, as a maintainer hands work over."""
        number = self.sim.open_issue(repo, title, body, by).number
        self.sim.label_issue(repo, number, "agent", by)
        return number

    async def handed_over(self, repo: str, title: str, body: str, by: str = "acme") -> Job:
        """The job for a newly handed-over issue, once it has ended and been reported."""
        number = self.label_new_issue(repo, title, body, by)
        return await self.wait_job(lambda j: j.repo == repo and j.issue_number == number)

    async def wait_job(self, predicate: Callable[[Job], bool], timeout: float = 90) -> Job:
        """Wait for a job that ended, was reported (or cannot be) and matches; deliveries
        settle first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.sim.settle()
            for job in await self.store.list_jobs(50):
                if job.state in FINAL and \
                        (job.reported or job.unreportable) \
                        and predicate(job):
                    return job
            await asyncio.sleep(0.2)
        jobs = [(j.id, j.state, j.stage, j.reason) for j in await self.store.list_jobs(50)]
        raise AssertionError(f"no matching job ended in {timeout}s: {jobs}")


@asynccontextmanager
async def stack(tmp: Path, script: list[dict[str, Any]], repeat_last: bool = False,
                per_conversation: bool = False, **overrides: Any) -> AsyncIterator[Stack]:
    """Handoff serving webhooks from the simulator, with a worker, a model and Podman
    (``sandbox="local"`` among the settings ``overrides``: commands on the host, for tests).
    Its worker stops without a shutdown grace unless ``shutdown_grace`` says otherwise."""
    async with AsyncExitStack() as stack:
        model = ScriptedModel(script, repeat_last=repeat_last, api_key=MODEL_KEY,
                              per_conversation=per_conversation)
        model_url = await stack.enter_async_context(running(model.app))
        store = await Store.open(f"sqlite+aiosqlite:///{tmp / 'handoff.db'}")
        stack.push_async_callback(store.close)
        sim = Simulator(tmp / "github", webhook_secret=SECRET)
        sim_url = await stack.enter_async_context(served(sim))
        settings = Settings(
            app_id=str(sim.world.app_id), private_key=SecretStr(sim.private_key),
            webhook_secret=SecretStr(SECRET), github_url=sim_url, data_dir=tmp / "data",
            model_base_url=f"{model_url}/v1", model_api_key=SecretStr(MODEL_KEY),
            prices={"scripted-1": (3.0, 15.0)},
            **{"model_provider": "openai", "model_name": "scripted-1", "sandbox": "podman",
               "sandbox_image": os.environ.get("HANDOFF_SANDBOX_IMAGE", "handoff-sandbox:dev"),
               "sandbox_memory_mb": 512, "command_timeout": 60, "status_interval": 0.0,
               "github_write_interval": 0.0, "poll_seconds": 0.2, "heartbeat_seconds": 1,
               "shutdown_grace": 0.0, **overrides})
        # No periodic tasks: a redelivery sweep would spend the simulator's faults.
        worker = build_worker(settings, store, housekeeping=False)
        app = create_app(store, SECRET.encode(), Context(settings.trigger_label,
                                                         settings.bot_login),
                         on_job=worker.wake.set, routes=dashboard.routes(store, settings))
        handoff_url = await stack.enter_async_context(running(app))
        sim.webhook_url = f"{handoff_url}/webhook"
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(stop))

        async def halt() -> None:
            stop.set()
            await asyncio.wait_for(task, 60)

        stack.push_async_callback(halt)
        yield Stack(sim, store, model, worker, settings)


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL programs, the newest installed version, if any."""
    initdb = debian_postgres("initdb")
    return initdb.parent if initdb else None


@contextlib.contextmanager
def throwaway_postgres(port: int, max_connections: int = 100) -> Iterator[str]:
    """A PostgreSQL server for tests and benches on a Unix socket only, removed afterwards;
    yields its URL with ``{db}`` left for the database name."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="handoff-pg-"))  # pytest's tmp is private to root
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "pg"], check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l",
                    str(base / "log"), "-o", f"-k {sock} -c listen_addresses='' -p {port} "
                    f"-c max_connections={max_connections}", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+asyncpg://pg@/{{db}}?host={sock}&port={port}"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
