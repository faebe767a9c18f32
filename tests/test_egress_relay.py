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


# The command the relay runs: opens N connections at once to the proxy it was given (through
# HTTP_PROXY), sends each a line, and with all of them open counts the relay's threads; prints
# how many lines came back and that count.
CLIENT = r"""
import os, socket, sys, threading
host, port = os.environ["HTTP_PROXY"].rsplit("/", 1)[1].split(":")
n, answers = int(sys.argv[1]), []
all_open = threading.Barrier(n + 1, timeout=30)
counted = threading.Event()
def one(i):
    try:
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(b"hello %d\n" % i)
            answers.append(s.makefile("rb").readline() == b"hello %d\n" % i)
            all_open.wait()
            counted.wait(30)
    except OSError:
        all_open.wait()
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
[t.start() for t in threads]
try:
    all_open.wait()  # every connection open and answered: count the relay's threads now
finally:
    tasks = len(os.listdir(f"/proc/{os.getppid()}/task"))
    counted.set()
[t.join() for t in threads]
print(sum(answers), tasks)
"""


async def _burst(socket_path: Path, connections: int) -> tuple[str, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-I", str(RELAY_SOURCE), str(socket_path), sys.executable, "-c", CLIENT,
        str(connections), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(child.communicate(), 60)
    return out.decode(), err.decode()


async def test_a_burst_of_connections_reaches_the_proxy_through_one_thread(
        tmp_path: Path) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        await reader.read()  # open until the client is done
        writer.close()

    server = await asyncio.start_unix_server(echo, path=str(tmp_path / "proxy.sock"),
                                             backlog=512)
    try:
        out, err = await _burst(tmp_path / "proxy.sock", 200)
    finally:
        server.close()
    answered, threads = map(int, out.split())
    assert answered == 200 and err == ""
    assert threads <= 2  # the event loop, and asyncio's child watcher


async def test_a_refused_connection_is_reported_and_the_listener_goes_on(
        tmp_path: Path) -> None:
    out, err = await _burst(tmp_path / "no-proxy.sock", 3)
    assert out.split()[0] == "0"  # no proxy: each connection closed, none answered
    assert err.count("handoff relay: the egress proxy refused a connection") == 3
