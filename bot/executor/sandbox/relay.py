"""Runs inside the sandbox: a TCP listener on 127.0.0.1 that forwards to the egress proxy.

Usage: python3 relay.py SOCKET COMMAND... Binds a free port, sets the proxy variables for
COMMAND, runs it, and exits with its exit code. Standard library only (the sandbox's python3).
One thread, whatever the number of connections (npm opens dozens at once: threads would hit
the sandbox's process limit); a connection that fails is written to stderr and closed, and
the listener goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def serve(path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(path)
    except OSError as exc:
        print(f"handoff relay: the egress proxy refused a connection: {exc}", file=sys.stderr)
        writer.close()
        return
    try:
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    except OSError:
        pass  # one side hung up: the other is closed below
    except Exception as exc:  # noqa: BLE001  (never the listener's end)
        print(f"handoff relay: a connection failed: {exc!r}", file=sys.stderr)
    finally:
        up_writer.close()
        writer.close()


async def main() -> int:
    path, command = sys.argv[1], sys.argv[2:]
    server = await asyncio.start_server(lambda r, w: serve(path, r, w), "127.0.0.1", 0,
                                        backlog=256)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    env = dict(os.environ)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                 "all_proxy"):
        env[name] = url
    env["NO_PROXY"] = env["no_proxy"] = ""
    child = await asyncio.create_subprocess_exec(*command, env=env)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, child.kill)
    code = await child.wait()
    server.close()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
