"""Run an ASGI app with uvicorn on a free local port, inside the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


@asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1", port: int = 0
                  ) -> AsyncIterator[uvicorn.Server]:
    """Serve ``app`` until the block ends; yields the started server."""
    # Handoff reads no client addresses, so proxy headers are not parsed; nor does it name
    # its server software in answers. Lifespan on where the app has one: the webhook's ingest
    # writer stops with the server.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False, lifespan="auto",
                                           proxy_headers=False, server_header=False))
    # Signals belong to the caller; uvicorn would otherwise take SIGINT/SIGTERM for itself.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited before it started")
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


def base_url(server: uvicorn.Server) -> str:
    """Where a started server listens, as ``http://host:port``."""
    sock = server.servers[0].sockets[0].getsockname()
    return f"http://{sock[0]}:{sock[1]}"


@asynccontextmanager
async def running(app: Any, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its base URL."""
    async with serving(app, host, port) as server:
        yield base_url(server)


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: what a long-running command waits for."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
