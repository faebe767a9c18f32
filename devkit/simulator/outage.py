"""GitHub unreachable on demand: the simulator's server refuses connections for a while.

Its listening socket is closed (a connection is refused, as to a host that is down) and the
connections it holds are closed once their answer is out; after the outage it listens on the
same port again, with the simulator's state as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import uvicorn

from bot.server import base_url, serving

if TYPE_CHECKING:
    from devkit.simulator.app import Simulator


class Outage:
    """Takes one uvicorn server off the network and back."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, seconds: float) -> None:
        """Refuse connections for ``seconds``, starting a moment from now (so the answer to
        the request that asked for it goes out first)."""
        task = asyncio.get_running_loop().create_task(self.dark(seconds))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def dark(self, seconds: float) -> None:
        await asyncio.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        for listener in self.server.servers:
            listener.close()
        for connection in list(self.server.server_state.connections):
            connection.shutdown()  # idle ones at once, busy ones after their answer
        await asyncio.sleep(seconds)
        self.server.config.host, self.server.config.port = host, port
        await self.server.startup()


@asynccontextmanager
async def served(sim: Simulator, host: str = "127.0.0.1", port: int = 0
                 ) -> AsyncIterator[str]:
    """Serve the simulator (outages included) until the block ends; yields its base URL."""
    async with serving(sim.app, host, port) as server:
        sim.base_url = base_url(server)
        sim.go_dark = Outage(server).start
        try:
            yield sim.base_url
        finally:
            sim.go_dark = None
