"""The egress allowlist: a per-sandbox HTTP(S) forward proxy on a unix socket.

A sandbox never has a network interface. When a phase needs egress (the setup command's
package downloads, an external agent CLI's model API), the sandbox's command runs beside a
small relay (``relay.py``, mounted read-only) that listens on the sandbox's own 127.0.0.1 and
forwards every connection to this proxy's unix socket, the only way out. The proxy parses
each request head with h11 (a maintained HTTP/1.1 parser), allows ``CONNECT host:port`` and
absolute-URI ``GET http://host/...`` only for listed hosts, connects to the address it
resolved and checked itself (never a loopback, private or link-local one unless told), and
records every host it refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import h11

log = logging.getLogger("handoff.egress")

RELAY_SOURCE = Path(__file__).with_name("relay.py")
MOUNT = "/run/handoff-egress"  # where the sandbox sees the socket and the relay
SOCKET_NAME = "proxy.sock"
RELAY_NAME = "relay.py"
MAX_HEAD = 64 * 1024
DEFAULT_PORTS = (80, 443)


def _split_entry(entry: str) -> tuple[str, int | None]:
    entry = entry.strip().lower().rstrip(".")
    if entry.startswith("[") and "]" in entry:  # [::1]:8080
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, None


def host_allowed(allow: list[str], host: str, port: int) -> bool:
    """``host:port`` matches an entry ``name`` (ports 80 and 443), ``name:port``, or
    ``*.suffix`` (any name under suffix, not suffix itself)."""
    host = host.lower().rstrip(".")
    for entry in allow:
        name, only_port = _split_entry(entry)
        if port not in ((only_port,) if only_port is not None else DEFAULT_PORTS):
            continue
        if name.startswith("*."):
            if host.endswith(name[1:]) and host != name[2:]:
                return True
        elif host == name:
            return True
    return False


def public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or
                ip.is_reserved or ip.is_unspecified)


class EgressProxy:
    """One sandbox's proxy: its socket lives in ``directory``, which the sandbox mounts."""

    def __init__(self, directory: Path, allow_private: bool = False,
                 connect_timeout: float = 15.0) -> None:
        self.directory = directory
        self.allow: list[str] = []
        self.allow_private = allow_private
        self.connect_timeout = connect_timeout
        self.denied: list[str] = []  # host:port, in the order first refused
        self.allowed: list[str] = []
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def create(cls, prefix: str, allow_private: bool = False,
                     uid: int | None = None) -> EgressProxy:
        """A proxy in a fresh folder (socket and relay), readable by the sandbox's user."""
        directory = Path(tempfile.mkdtemp(prefix=prefix))
        directory.chmod(0o755)
        shutil.copyfile(RELAY_SOURCE, directory / RELAY_NAME)
        (directory / RELAY_NAME).chmod(0o644)
        proxy = cls(directory, allow_private)
        proxy.server = await asyncio.start_unix_server(proxy._serve,
                                                       path=str(directory / SOCKET_NAME))
        os.chmod(directory / SOCKET_NAME, 0o666)
        if uid is not None and os.geteuid() == 0:
            os.chown(directory, uid, uid)
        return proxy

    @property
    def active(self) -> bool:
        return bool(self.allow)

    def set_allow(self, allow: list[str]) -> None:
        self.allow = [a.strip() for a in allow if a.strip()]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.tasks):
            task.cancel()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _deny(self, target: str, why: str) -> None:
        if target not in self.denied:
            self.denied.append(target)
        log.warning("egress denied: %s (%s)", target, why)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, TimeoutError, h11.ProtocolError, ValueError) as exc:
            log.debug("egress connection ended: %s", exc)
        finally:
            self.tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        event: object = h11.NEED_DATA
        while event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(65536), 30)
            conn.receive_data(data)
            event = conn.next_event()
        if not isinstance(event, h11.Request):
            return
        method = event.method.decode("ascii", "replace").upper()
        target = event.target.decode("ascii", "replace")
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            host = host.strip("[]")
            path = b""
        else:
            parts = urlsplit(target)
            if parts.scheme != "http" or not parts.hostname:
                await self._reply(conn, writer, 400, "only absolute http:// URLs or CONNECT")
                return
            host, port_text = parts.hostname, str(parts.port or 80)
            path = (parts.path or "/").encode() + (b"?" + parts.query.encode()
                                                   if parts.query else b"")
        if not port_text.isdigit() or not host:
            await self._reply(conn, writer, 400, "bad target")
            return
        port = int(port_text)
        label = f"{host}:{port}"
        if not host_allowed(self.allow, host, port):
            self._deny(label, "not on the allowlist")
            await self._reply(conn, writer, 403, f"{label} is not on the egress allowlist")
            return
        address = await self._resolve(host, port)
        if address is None:
            self._deny(label, "resolves to a loopback, private or link-local address")
            await self._reply(conn, writer, 403, f"{label} resolves to a non-public address")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            await self._reply(conn, writer, 502, f"could not connect to {label}: {exc}")
            return
        if label not in self.allowed:
            self.allowed.append(label)
        leftover = conn.trailing_data[0]
        if method == "CONNECT":
            writer.write(conn.send(h11.Response(status_code=200, headers=[],
                                                reason=b"Connection established")) or b"")
        else:
            headers = [(k, v) for k, v in event.headers.raw_items()
                       if k.lower() not in (b"proxy-connection", b"proxy-authorization",
                                            b"connection", b"keep-alive")]
            if not any(k.lower() == b"host" for k, _ in headers):
                headers.append((b"Host", host.encode()))
            headers.append((b"Connection", b"close"))
            client = h11.Connection(h11.CLIENT)
            up_writer.write(client.send(h11.Request(method=event.method, target=path,
                                                    headers=headers)) or b"")
        if leftover:
            up_writer.write(leftover)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _resolve(self, host: str, port: int) -> str | None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            return None
        if not self.allow_private and not all(public_address(a) for a in addresses):
            return None
        return addresses[0]

    @staticmethod
    async def _reply(conn: h11.Connection, writer: asyncio.StreamWriter, status: int,
                     text: str) -> None:
        body = (text + "\n").encode()
        writer.write(conn.send(h11.Response(
            status_code=status, headers=[("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body))),
                                         ("Connection", "close")])) or b"")
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        with contextlib.suppress(OSError):
            await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()

