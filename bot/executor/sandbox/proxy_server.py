"""The egress proxy's own process: an HTTP(S) forward proxy for one sandbox's egress phase.

Started by ``egress.EgressProxy`` as ``python -I proxy_server.py unix SOCKET`` (or ``tcp HOST
FIRST LAST`` for a Kubernetes pod, see ``listen``), so a sandbox that
floods it exhausts this process's file descriptors, never the worker's: it lowers its own
``RLIMIT_NOFILE`` and address space at start, serves at most ``MAX_CONNECTIONS`` at once,
keeps up to ``MAX_WAITING`` more waiting for a slot (npm opens dozens at once: a refusal costs
it a retry 10 to 60 s later), answers 503 beyond, and gives each request head (and each
tunnel's TLS ClientHello) one deadline.

What it allows, per connection, one request only (pipelined bytes after it are never read):
- ``CONNECT host:port`` to a listed host, when the tunnel starts with a TLS ClientHello whose
  SNI names that same host (no SNI only for an IP-literal host, as TLS clients send none);
- an absolute-URI ``http://host/...`` request to a listed host, whose ``Host:`` header, if
  any, names that same host; upstream gets ``Host`` and ``Connection: close`` set by us.
Addresses are resolved and checked here: only globally routable ones, unless told otherwise.
An entry ``relay=ADDRESS:PORT`` is the worker's own relay for this job (a CLI's model and MCP
servers, ``agent/relay.py``): that address exactly, connected to directly, loopback allowed.
With an ``upstream`` proxy (``http://[user:password@]host:port``, the operator's), a listed
host is reached through it instead, with ``CONNECT`` for both kinds of request: the allowlist,
the SNI and the Host header are still checked here, the name is resolved by the upstream proxy.

Control: JSON lines on stdin (``{"allow": [...], "allow_private": bool, "upstream": url}``,
``{"peer": ip}``, ``{"sync": n}``); EOF stops it. Events: JSON lines on stdout (``ready``
with the port, ``denied`` for each new recordable host with the ``kind`` of refusal (``KINDS``),
``others`` counting refused names not recorded, ``allowed``, ``stranger`` for a refused peer
address, ``synced``). Standard library and h11 only: it runs isolated (``-I``) and imports
nothing of Handoff.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import random
import re
import resource
import socket
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import h11

MAX_HEAD = 64 * 1024
MAX_HELLO = 64 * 1024
HEAD_DEADLINE = 10.0  # seconds for a whole request head, and again for a TLS ClientHello
IDLE = 120.0  # seconds a request body may stall
CONNECT_TIMEOUT = 15.0
MAX_CONNECTIONS = 64
MAX_WAITING = 448  # npm ci of jest (267 packages) opens a connection for each at once
# Connections the kernel holds until accepted: a burst beyond it is refused there, and
# asyncio's connect in the sandbox's relay reports that refusal as a connection.
BACKLOG = MAX_CONNECTIONS + MAX_WAITING
NOFILE = 1024  # 2 per connection served, 1 per waiting, the refusals and Python's own
ADDRESS_SPACE = 1 << 30
DEFAULT_PORTS = (80, 443)
NOBODY = 65534
MAX_RECORDED = 20  # refused hosts kept for the PR; the rest are counted
MAX_ALLOWED = 50
HOSTNAME = re.compile(r"[A-Za-z0-9.-]{1,253}")
HOP_BY_HOP = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive",
              b"host", b"te", b"trailer", b"upgrade", b"expect"}
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 21\r\nConnection: close\r\n\r\n"
        b"too many connections\n")
Emit = Callable[[dict[str, Any]], None]
# Why a host was refused, as the ``denied`` event's ``kind`` says it.
NOT_LISTED = "not-listed"  # not on the allowlist
NON_PUBLIC = "non-public"  # listed, but resolves to a loopback, private, ... address
DNS = "dns"  # listed, but its name does not resolve
UNREACHABLE = "unreachable"  # listed and resolved, but the connection failed
MISMATCH = "mismatch"  # the Host header or the TLS SNI names another host than asked for
KINDS = (NOT_LISTED, NON_PUBLIC, DNS, UNREACHABLE, MISMATCH)
RELAY = "relay="  # an allow entry naming the worker's relay (see the module's docstring)


class Refused(Exception):
    """A request the proxy turns down: ``status`` to answer, ``host`` to record, ``kind``
    (one of ``KINDS``) for why."""

    def __init__(self, status: int, host: str, port: int, why: str,
                 kind: str = MISMATCH) -> None:
        super().__init__(why)
        self.status, self.host, self.port, self.why, self.kind = status, host, port, why, kind


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


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def public_address(address: str) -> bool:
    """Globally routable (``is_global``) and none of loopback, private, link-local, shared
    (100.64.0.0/10: carrier NAT, a cloud's metadata address), multicast or reserved; an IPv6
    address that carries an IPv4 one is judged by that too."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_v4(ip)) is not None:
        if not public_address(str(inner)):
            return False
        if ip.ipv4_mapped:
            return True
    return ip.is_global and not (ip.is_loopback or ip.is_private or ip.is_link_local or
                                 ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def recordable(host: str) -> bool:
    """A name worth showing a person: letters, digits, dots and dashes, or an IP literal."""
    return bool(HOSTNAME.fullmatch(host)) or ip_literal(host)


def label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def same_host(a: str, b: str) -> bool:
    return a.lower().rstrip(".") == b.lower().rstrip(".")


AUTHORITY = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([A-Za-z0-9.-]+)(?::(\d{1,5}))?")


def parse_authority(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` with a plain name or an IP literal, as
    (host, port); Refused (400, counted, never shown) for anything else."""
    match = AUTHORITY.fullmatch(text)
    host = match and (match[1] or match[3])
    port = int(match[2] or match[4] or default_port) if match else 0
    if not match or not host or not recordable(host) or not 0 < port < 65536:
        raise Refused(400, text, 0, "not a plain host[:port]")
    return host, port


# -- TLS ClientHello ---------------------------------------------------------------------------

class _Bytes:
    """A cursor over bytes that raises ValueError instead of reading past the end."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("truncated ClientHello")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def left(self) -> int:
        return len(self.data) - self.at


def hello_body(data: bytes) -> bytes | None:
    """The ClientHello message in the first TLS records of ``data``; None until all of it has
    arrived. ValueError when ``data`` does not start a TLS handshake with a ClientHello."""
    handshake, at = b"", 0
    while at + 5 <= len(data):
        if data[at] != 22:  # handshake records only
            raise ValueError("the tunnel does not start with a TLS handshake")
        length = int.from_bytes(data[at + 3:at + 5], "big")
        if at + 5 + length > len(data):
            break
        handshake += data[at + 5:at + 5 + length]
        at += 5 + length
        if len(handshake) >= 4:
            if handshake[0] != 1:
                raise ValueError("the TLS handshake does not start with a ClientHello")
            size = int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= 4 + size:
                return handshake[4:4 + size]
    if data[:1] and data[0] != 22:
        raise ValueError("the tunnel does not start with a TLS handshake")
    if len(data) > MAX_HELLO:
        raise ValueError("ClientHello too long")
    return None


def hello_sni(body: bytes) -> str | None:
    """The host name in a ClientHello's server_name extension, or None without one."""
    r = _Bytes(body)
    r.take(2 + 32)  # version, random
    r.take(r.number(1))  # session id
    r.take(r.number(2))  # cipher suites
    r.take(r.number(1))  # compression methods
    if r.left() == 0:
        return None
    extensions = _Bytes(r.take(r.number(2)))
    while extensions.left():
        kind, data = extensions.number(2), extensions.take(extensions.number(2))
        if kind != 0:
            continue
        names = _Bytes(data)
        names = _Bytes(names.take(names.number(2)))
        while names.left():
            name_type, name = names.number(1), names.take(names.number(2))
            if name_type == 0:
                return name.decode("ascii")  # UnicodeDecodeError is a ValueError
        return None
    return None


# -- the proxy ----------------------------------------------------------------------------------

class Proxy:
    """The allowlist, what was refused, and the handling of one connection."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.allow: list[str] = []
        self.allow_private = False
        self.upstream = ""  # the operator's proxy to reach listed hosts through, if any
        self.connections = 0  # served and waiting
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.recorded: set[str] = set()
        self.others = 0
        self.others_sent = 0
        self.allowed: set[str] = set()
        self.pod_only = False  # answer only ``peer``
        self.peer = ""
        self.port = 0
        self.strangers: set[str] = set()

    def deny(self, host: str, port: int, why: str, kind: str = MISMATCH) -> None:
        name = label(host, port)
        if not host or name in self.recorded:
            return
        if port and recordable(host) and len(self.recorded) < MAX_RECORDED:
            self.recorded.add(name)
            self.emit({"denied": name, "why": why, "kind": kind})
        else:
            self.others += 1

    def flush(self) -> None:
        if self.others != self.others_sent:
            self.others_sent = self.others
            self.emit({"others": self.others})

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.pod_only and (peer := str((writer.get_extra_info("peername") or ("",))[0])
                              ) != self.peer:
            if peer not in self.strangers and len(self.strangers) < MAX_RECORDED:
                self.strangers.add(peer)
                self.emit({"stranger": peer})
            writer.close()
            return
        if self.connections >= MAX_CONNECTIONS + MAX_WAITING:
            with contextlib.suppress(OSError):
                writer.write(BUSY)
            writer.close()
            return
        self.connections += 1
        try:
            async with self.slots:
                await self.handle(reader, writer)
        except Refused as refused:
            self.deny(refused.host, refused.port, refused.why, refused.kind)
        except (OSError, TimeoutError, h11.ProtocolError, ValueError):
            pass
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        async with asyncio.timeout(HEAD_DEADLINE):
            request = await _next(conn, reader)
        if not isinstance(request, h11.Request):
            return
        try:
            if request.method.upper() == b"CONNECT":
                await self.tunnel(conn, request, reader, writer)
            else:
                await self.forward(conn, request, reader, writer)
        except Refused as refused:
            if conn.our_state is h11.SEND_RESPONSE:
                await _reply(conn, writer, refused.status, str(refused))
            raise

    async def target(self, host: str, port: int) -> tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]:
        """An upstream connection to a listed host at an address checked here."""
        if RELAY + label(host, port) in self.allow:  # the worker's relay: straight there
            return await self.connect(host, host, port)
        if not host_allowed(self.allow, host, port):
            raise Refused(403, host, port, f"{label(host, port)} is not on the egress allowlist",
                          NOT_LISTED)
        if self.upstream:
            upstream = await self.through_upstream(host, port)
        else:
            upstream = await self.connect(host, await self.resolve(host, port), port)
        name = label(host, port)
        if name not in self.allowed and len(self.allowed) < MAX_ALLOWED:
            self.allowed.add(name)
            self.emit({"allowed": name})
        return upstream

    async def connect(self, host: str, address: str, port: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A direct connection to ``address`` (``host``'s); Refused when it fails."""
        try:
            return await asyncio.wait_for(asyncio.open_connection(address, port),
                                          CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise Refused(502, host, port, f"could not connect to {label(host, port)}: "
                          f"{exc or 'timed out'}", UNREACHABLE) from None

    async def through_upstream(self, host: str, port: int) -> tuple[asyncio.StreamReader,
                                                                    asyncio.StreamWriter]:
        """A tunnel to ``host:port`` through the upstream proxy (its answer's head read);
        Refused (``UNREACHABLE``) when it cannot be reached or does not answer 200. Its
        credentials are sent to it alone and never named in a refusal."""
        proxy = urlsplit(self.upstream)
        head = f"CONNECT {label(host, port)} HTTP/1.1\r\nHost: {label(host, port)}\r\n"
        if proxy.username is not None:
            pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            head += f"Proxy-Authorization: Basic {base64.b64encode(pair.encode()).decode()}\r\n"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(proxy.hostname,
                                                               proxy.port or 80)
                writer.write((head + "\r\n").encode())
                answer = await reader.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            raise Refused(502, host, port, f"could not reach {label(host, port)} through the "
                          f"upstream proxy: {getattr(exc, 'strerror', None) or type(exc).__name__}",
                          UNREACHABLE) from None
        status = answer.split(b"\r\n", 1)[0].split(b" ")[1:2]
        if status != [b"200"]:
            writer.close()
            shown = status[0].decode("ascii", "replace") if status else "nothing"
            raise Refused(502, host, port, f"the upstream proxy answered {shown!r} for "
                          f"{label(host, port)}", UNREACHABLE)
        return reader, writer

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to; Refused when the name does not resolve (``DNS``) or
        resolves to any address that is not public (``NON_PUBLIC``, unless allowed)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                                 type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Refused(502, host, port, f"{label(host, port)} does not resolve: "
                          f"{exc.strerror or exc}", DNS) from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise Refused(502, host, port, f"{label(host, port)} does not resolve", DNS)
        if not self.allow_private and not all(public_address(a) for a in addresses):
            raise Refused(403, host, port, f"{label(host, port)} resolves to a loopback, "
                          "private, shared or link-local address", NON_PUBLIC)
        return addresses[0]

    async def tunnel(self, conn: h11.Connection, request: h11.Request,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """CONNECT: the tunnel opens once its ClientHello names the CONNECT host."""
        host, port = parse_authority(request.target.decode("ascii"), 443)
        up_reader, up_writer = await self.target(host, port)
        try:
            writer.write(conn.send(h11.Response(status_code=200, headers=[],
                                                reason=b"Connection established")) or b"")
            hello = conn.trailing_data[0]
            async with asyncio.timeout(HEAD_DEADLINE):
                while (body := hello_body(hello)) is None:
                    more = await reader.read(16384)
                    if not more:
                        return
                    hello += more
            sni = hello_sni(body)
            if sni is None and not ip_literal(host):
                raise Refused(403, host, port, "its TLS ClientHello names no host")
            if sni is not None and not same_host(sni, host):
                raise Refused(403, sni.rstrip(".").lower(), port,
                              f"a tunnel to {label(host, port)} asked TLS for {sni!r}")
            up_writer.write(hello)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def forward(self, conn: h11.Connection, request: h11.Request,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """An absolute-URI request: one, with our Host; nothing after it is read."""
        parts = urlsplit(request.target.decode("ascii", "replace"))
        if parts.scheme != "http":
            raise Refused(400, "", 0, "only absolute http:// URLs or CONNECT")
        host, port = parse_authority(parts.netloc, 80)
        for name, value in request.headers:
            if name == b"host":
                claimed, claimed_port = parse_authority(value.decode("ascii", "replace"), 80)
                if not same_host(claimed, host) or claimed_port != port:
                    raise Refused(403, claimed.rstrip(".").lower(), claimed_port,
                                  f"a request to {label(host, port)} named Host {claimed!r}")
        up_reader, up_writer = await self.target(host, port)
        try:
            authority = f"[{host}]" if ":" in host else host
            headers = [(k, v) for k, v in request.headers.raw_items()
                       if k.lower() not in HOP_BY_HOP]
            headers += [(b"Host", (authority + (f":{port}" if port != 80 else "")).encode()),
                        (b"Connection", b"close")]
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            client = h11.Connection(h11.CLIENT)
            up_writer.write(client.send(h11.Request(method=request.method, target=path,
                                                    headers=headers)) or b"")
            while True:
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100,
                                                                     headers=[])) or b"")
                async with asyncio.timeout(IDLE):
                    event = await _next(conn, reader)
                if isinstance(event, h11.Data):
                    up_writer.write(client.send(event) or b"")
                    await up_writer.drain()
                elif isinstance(event, h11.EndOfMessage):
                    up_writer.write(client.send(h11.EndOfMessage()) or b"")
                    break
                else:
                    return
            await _closing_answer(up_reader, writer)
            await _pipe(up_reader, writer)
        finally:
            up_writer.close()


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The next h11 event, reading as needed."""
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(65536))
    return event


async def _reply(conn: h11.Connection, writer: asyncio.StreamWriter, status: int,
                 text: str) -> None:
    body = (text + "\n").encode()
    with contextlib.suppress(h11.ProtocolError, OSError):
        writer.write(conn.send(h11.Response(
            status_code=status, headers=[("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body))),
                                         ("Connection", "close")])) or b"")
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()


CONNECTION_HEADERS = (b"connection:", b"keep-alive:", b"proxy-connection:")


async def _closing_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Pass on the upstream answer's heads, the final one saying ``Connection: close``: one
    request per connection, so a client must not keep it for another (an upstream that
    keeps its connections alive would not say so)."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            partial = getattr(exc, "partial", b"")
            writer.write(partial if isinstance(partial, bytes) else b"")
            return  # not a head we can read: what follows is passed on as it is
        lines = head[:-4].split(b"\r\n")
        if lines[0][9:10] == b"1":  # an interim answer (100 Continue): as it is
            writer.write(head)
            continue
        kept = [line for line in lines[1:] if not line.lower().startswith(CONNECTION_HEADERS)]
        writer.write(b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n")
        return


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


def _limit_self() -> None:
    """This process's own limits: a flood ends here, not in the worker."""
    for kind, value in ((resource.RLIMIT_NOFILE, NOFILE), (resource.RLIMIT_AS, ADDRESS_SPACE)):
        _, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


def _first_line() -> bytes:
    """The first control line, read unbuffered (the rest is read by asyncio)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            break
        line += byte
    return line


def _apply(proxy: Proxy, command: dict[str, Any]) -> None:
    if "allow" in command:
        proxy.allow = [str(a) for a in command["allow"]]
        proxy.allow_private = bool(command.get("allow_private"))
        proxy.upstream = str(command.get("upstream") or "")
    if "peer" in command:
        proxy.peer = str(command["peer"])
    if "sync" in command:
        proxy.flush()
        proxy.emit({"synced": command["sync"]})


async def listen(proxy: Proxy, where: list[str]) -> asyncio.base_events.Server:
    """``unix PATH``: a socket any local user may use (its folder is the sandbox's only way
    to it). ``tcp HOST FIRST LAST``: the first free port of that range from a random one on,
    answering only the address ``peer`` names (a Kubernetes sandbox pod)."""
    if where[0] == "unix":
        server = await asyncio.start_unix_server(proxy.serve, path=where[1], backlog=BACKLOG)
        os.chmod(where[1], 0o666)
        return server
    proxy.pod_only = True
    first, last = int(where[2]), int(where[3])
    start = random.randrange(first, last + 1)
    for port in [*range(start, last + 1), *range(first, start)]:
        with contextlib.suppress(OSError):
            server = await asyncio.start_server(proxy.serve, where[1], port, backlog=BACKLOG)
            proxy.port = port
            return server
    raise OSError(f"no free port in {first}-{last}")


async def main(where: list[str]) -> None:
    """Serve with the allowlist of the first control line, until stdin ends."""

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    proxy = Proxy(emit)
    _apply(proxy, json.loads(_first_line() or b"{}"))
    server = await listen(proxy, where)
    if os.geteuid() == 0:  # a root worker's proxy serves the sandbox as nobody
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    # From here on nobody reads stderr: what asyncio logs under a flood (accept errors) must
    # not fill a pipe and stall the proxy.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    emit({"ready": True, "port": proxy.port})
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        while line := await stdin.readline():
            _apply(proxy, json.loads(line))
    finally:
        server.close()
        if where[0] == "unix":
            with contextlib.suppress(OSError):
                os.unlink(where[1])
        proxy.flush()


if __name__ == "__main__":
    _limit_self()
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(main(sys.argv[1:]))
