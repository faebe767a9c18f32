"""Fixtures that run the GitHub simulator on 127.0.0.1 for a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.github.client import GitHubApp, Pacer
from bot.github.retry import RetryPolicy
from devkit.simulator import Simulator
from devkit.simulator.outage import served

# The clients app_client made for each running simulator (by id): closed when it stops.
_clients: dict[int, list[GitHubApp]] = {}


@asynccontextmanager
async def simulator(root: Path, webhook_url: str | None = None,
                    secret: str = "") -> AsyncIterator[Simulator]:
    sim = Simulator(root, webhook_url=webhook_url, webhook_secret=secret)
    _clients[id(sim)] = []
    try:
        async with served(sim):
            yield sim
            await sim.settle()
    finally:
        for app in _clients.pop(id(sim)):
            await app.close()


def app_client(sim: Simulator, **policy: float) -> GitHubApp:
    """Handoff's GitHub layer pointed at the simulator, with test-sized waits; closed with
    the simulator (``simulator``)."""
    defaults = {"attempts": 4, "base_delay": 0.05, "max_delay": 0.5, "max_wait": 5.0}
    app = GitHubApp(str(sim.world.app_id), sim.private_key, sim.base_url, timeout=5,
                    policy=RetryPolicy(**{**defaults, **policy}),  # type: ignore[arg-type]
                    pacer=Pacer(interval=0.05))
    _clients[id(sim)].append(app)
    return app
