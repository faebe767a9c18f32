"""A burst of connections, as npm opens at once: those beyond the egress proxy's slots wait
for one instead of being refused (a 503 costs npm a retry 10 to 60 s later)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.executor.sandbox import proxy_server


async def test_a_burst_beyond_the_slots_waits_and_every_request_is_answered(
        tmp_path: Path) -> None:
    served: list[int] = []

    async def registry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        served.append(1)
        await asyncio.sleep(0.2)  # a tarball takes a moment: the slots fill up
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(registry, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    events: list[dict[str, Any]] = []
    proxy = proxy_server.Proxy(events.append)
    proxy.allow, proxy.allow_private = [f"127.0.0.1:{port}"], True
    server = await asyncio.start_unix_server(proxy.serve, path=str(tmp_path / "p.sock"),
                                             backlog=256)  # every connect is real

    async def get(n: int) -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "p.sock"))
        writer.write(f"GET http://127.0.0.1:{port}/pkg-{n}.tgz HTTP/1.1\r\n"
                     f"Host: 127.0.0.1:{port}\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return answer

    burst = proxy_server.MAX_CONNECTIONS + 40
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(get(n) for n in range(burst))), 60)
    finally:
        server.close()
        upstream.close()
    assert [a.split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 200 OK"] * burst
    assert len(served) == burst and not [e for e in events if "denied" in e]
