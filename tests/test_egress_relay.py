"""The relay a sandboxed command runs beside (``relay.py``): a TCP listener on 127.0.0.1 whose
connections it forwards to the egress proxy's unix socket, the command's proxy variables
pointing at it. Run here on the host by this Python, from its file, with the real proxy's
process and a real HTTP server: the same code the sandbox's python3 runs."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.executor.sandbox.egress import RELAY_SOURCE, EgressProxy

# What a setup command does: fetch through the proxy the environment names, say what it got.
FETCH = """
import os, sys, urllib.error, urllib.request
print("proxy", os.environ["HTTPS_PROXY"] == os.environ["http_proxy"], repr(os.environ["NO_PROXY"]))
for url in sys.argv[1:]:
    try:
        print(url, urllib.request.urlopen(url, timeout=10).read().decode())
    except urllib.error.HTTPError as exc:
        print(url, exc.code)
    except OSError as exc:
        print(url, "failed")
sys.exit(7)
"""


@pytest.fixture
async def site() -> AsyncIterator[int]:
    """A local HTTP server that answers every request with its path."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = (await reader.readuntil(b"\r\n\r\n")).split(b" ")[1]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(path) + 5, b"page " + path))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def relay(socket: Path, *command: str) -> tuple[int, list[str]]:
    """The relay's exit code and its command's lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(RELAY_SOURCE), str(socket), *command,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return await process.wait(), out.decode().splitlines()


async def test_a_command_reaches_allowed_hosts_through_the_relay_and_keeps_its_exit_code(
        tmp_path: Path, site: int) -> None:
    proxy = await EgressProxy.create(str(tmp_path / "egress-"), allow_private=True)
    await proxy.set_allow([f"localhost:{site}"])
    try:
        code, lines = await relay(proxy.socket, sys.executable, "-c", FETCH,
                                  f"http://localhost:{site}/simple/", "http://pypi.org/")
        await proxy.sync()
    finally:
        await proxy.close()
    assert code == 7
    assert lines == ["proxy True ''", f"http://localhost:{site}/simple/ page /simple/",
                     "http://pypi.org/ 403"]
    assert proxy.allowed == [f"localhost:{site}"] and proxy.refused == ["pypi.org:80"]


async def test_without_the_proxy_a_connection_is_closed_not_hung(tmp_path: Path,
                                                                 site: int) -> None:
    code, lines = await relay(tmp_path / "no-proxy.sock", sys.executable, "-c", FETCH,
                              f"http://localhost:{site}/")
    assert code == 7 and lines[1:] == [f"http://localhost:{site}/ failed"]


async def test_a_stopped_relay_stops_its_command(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(RELAY_SOURCE), str(tmp_path / "p.sock"), sys.executable, "-c",
        "import time; print('up', flush=True); time.sleep(60)", stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"up\n"
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 128 + signal.SIGKILL
