"""The sandbox's relay to the egress proxy (bot/executor/sandbox/relay.py), run as the sandbox
runs it: a burst of connections all reach the proxy through one thread, and a connection the
proxy refuses is reported on stderr while the listener goes on."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.executor.sandbox.egress import RELAY_SOURCE

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


async def _relay(socket_path: Path, connections: int) -> tuple[str, str]:
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
        out, err = await _relay(tmp_path / "proxy.sock", 200)
    finally:
        server.close()
    answered, threads = map(int, out.split())
    assert answered == 200 and err == ""
    assert threads <= 2  # the event loop, and asyncio's child watcher


async def test_a_refused_connection_is_reported_and_the_listener_goes_on(
        tmp_path: Path) -> None:
    out, err = await _relay(tmp_path / "no-proxy.sock", 3)
    assert out.split()[0] == "0"  # no proxy: each connection closed, none answered
    assert err.count("handoff relay: the egress proxy refused a connection") == 3
