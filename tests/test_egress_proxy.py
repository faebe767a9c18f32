"""The egress proxy's process (``proxy_server.py``), request by request, over real sockets to a
real local host: what it passes on and how, what it refuses (a request that is not an
``http://`` URL, a Host or TLS name other than the one asked for, a TLS start that is not a
ClientHello, a hello that never ends or never comes) and, for a Kubernetes pod, whom it
answers at all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import unused_port

from bot.executor.sandbox import proxy_server
from bot.executor.sandbox.base import SandboxError
from bot.executor.sandbox.egress import EgressProxy
from bot.executor.sandbox.kubernetes import PodEgressProxy
from bot.executor.sandbox.proxy_server import host_allowed, public_address


def client_hello(sni: str | None = None, name_type: int = 0, extensions: bool = True,
                 size: int | None = None) -> bytes:
    """A TLS record holding a ClientHello: with a server_name extension naming ``sni`` (as
    ``name_type``), none, or no extensions at all; ``size`` claims another length."""
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    if extensions:
        ext = b""
        if sni is not None:
            name = sni.encode()
            entry = bytes([name_type]) + struct.pack("!H", len(name)) + name
            listed = struct.pack("!H", len(entry)) + entry
            ext = struct.pack("!HH", 0, len(listed)) + listed
        ext = struct.pack("!HH", 0x002B, 2) + b"\x03\x04" + ext  # supported_versions first
        body += struct.pack("!H", len(ext)) + ext
    handshake = b"\x01" + (size or len(body)).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


class Host:
    """A local host: what each connection sent, and an HTTP answer to a request."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        while chunk := await reader.read(65536):
            data += chunk
            if data.startswith(b"POST") and data.endswith(b"hello body"):
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade")
                break
            if data.startswith(b"GET /alive") and data.endswith(b"\r\n\r\n"):
                # A server keeping its connections alive, as many do whatever they are asked.
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n"
                             b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok")
                break
            if data.startswith(b"GET") and data.endswith(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                break
        self.received.append(data)
        writer.close()


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    found = Host()
    server = await asyncio.start_server(found.serve, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    yield found
    server.close()
    await server.wait_closed()


@pytest.fixture
async def proxy(tmp_path: Path, host: Host) -> AsyncIterator[EgressProxy]:
    """The proxy's own process, allowing the local host by name and by address."""
    started = await EgressProxy.create(str(tmp_path / "egress-"), allow_private=True)
    await started.set_allow([f"localhost:{host.port}", f"127.0.0.1:{host.port}"])
    yield started
    await started.close()


async def ask(proxy: EgressProxy, head: bytes, then: bytes = b"", close: bool = False) -> bytes:
    """All the proxy answers to ``head``, and ``then`` sent once its head answered."""
    reader, writer = await asyncio.open_unix_connection(str(proxy.socket))
    writer.write(head)
    if then or close:
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(then)
        if close:
            writer.write_eof()
    else:
        answer = b""
    with contextlib.suppress(ConnectionResetError):  # closed on bytes it did not read
        answer += await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_a_request_with_a_body_is_passed_on_with_our_host_and_no_proxy_headers(
        proxy: EgressProxy, host: Host) -> None:
    head = (f"POST http://localhost:{host.port}/upload?x=1 HTTP/1.1\r\n"
            f"Host: LOCALHOST.:{host.port}\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
            "Proxy-Connection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
    answer = await ask(proxy, head.encode(), b"hello body")
    assert answer.startswith(b"HTTP/1.1 100 ")  # the client was told to send its body
    assert answer.endswith(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n"
                           b"Connection: close\r\n\r\nmade")
    sent = host.received[0]
    assert sent.startswith(b"POST /upload?x=1 HTTP/1.1\r\n") and sent.endswith(b"hello body")
    assert f"Host: localhost:{host.port}\r\n".encode() in sent
    assert b"Connection: close\r\n" in sent and b"Proxy-" not in sent


async def test_only_absolute_http_urls_are_forwarded(proxy: EgressProxy, host: Host) -> None:
    for target in (f"https://localhost:{host.port}/", "/relative"):
        answer = await ask(proxy, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 400 ") and b"only absolute http://" in answer
    await proxy.sync()
    assert proxy.refused == [] and host.received == []  # nothing to name, nothing sent


async def test_a_host_header_naming_another_port_is_a_mismatch(proxy: EgressProxy,
                                                               host: Host) -> None:
    other = host.port + 1 if host.port < 65535 else host.port - 1
    answer = await ask(proxy, f"GET http://localhost:{host.port}/ HTTP/1.1\r\n"
                              f"Host: localhost:{other}\r\n\r\n".encode())
    await proxy.sync()
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert proxy.refused_by_kind == {"mismatch": [f"localhost:{other}"]}
    assert host.received == []


async def test_a_tunnel_needs_a_client_hello_naming_its_host(proxy: EgressProxy,
                                                             host: Host) -> None:
    """By name: the hello must name it (as a host name: another kind of name is none); by
    address: a hello naming nothing, even with no extensions at all, is how TLS clients
    speak to an address."""
    by_name = f"CONNECT localhost:{host.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    by_address = f"CONNECT 127.0.0.1:{host.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    for head, hello in [(by_name, client_hello("localhost")),
                        (by_name, client_hello("localhost", name_type=7)),
                        (by_name, client_hello()),
                        (by_address, client_hello(extensions=False))]:
        answer = await ask(proxy, head, hello, close=True)
        assert answer.startswith(b"HTTP/1.1 200 Connection established")
    await asyncio.sleep(0.2)
    await proxy.sync()
    assert sorted(r for r in host.received if r) == sorted([client_hello("localhost"),
                                            client_hello(extensions=False)])
    assert proxy.refused_by_kind == {"mismatch": [f"localhost:{host.port}"]}


async def test_a_tunnel_that_does_not_start_a_tls_client_hello_is_closed(
        proxy: EgressProxy, host: Host) -> None:
    head = f"CONNECT 127.0.0.1:{host.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    server_hello = bytearray(client_hello())
    server_hello[5] = 2  # a ServerHello where the ClientHello belongs
    truncated = client_hello("localhost")[:-6]
    truncated = truncated[:3] + struct.pack("!H", len(truncated) - 5) + truncated[5:6] + \
        (len(truncated) - 9).to_bytes(3, "big") + truncated[9:]
    endless = client_hello(size=1 << 20)  # says 1 MB: more than the proxy reads
    endless += b"".join(b"\x16\x03\x01\x40\x00" + bytes(0x4000) for _ in range(4))
    for hello in (b"GET / HTTP/1.1\r\n", bytes(server_hello), truncated, endless, b""):
        answer = await ask(proxy, head, hello, close=True)
        assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"  # then closed
    await asyncio.sleep(0.2)
    assert not any(host.received)  # not a byte reached the host


async def test_a_client_hello_gets_one_deadline(tmp_path: Path, host: Host,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_server, "HEAD_DEADLINE", 1.0)
    inside = proxy_server.Proxy(lambda _: None)
    inside.allow, inside.allow_private = [f"127.0.0.1:{host.port}"], True
    server = await asyncio.start_unix_server(inside.serve, path=str(tmp_path / "p.sock"))
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "p.sock"))
    started = asyncio.get_running_loop().time()
    try:
        writer.write(f"CONNECT 127.0.0.1:{host.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        writer.write(client_hello("127.0.0.1")[:20])  # and nothing more
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        server.close()
    assert asyncio.get_running_loop().time() - started < 3
    await asyncio.sleep(0.2)
    assert not any(host.received)


async def test_an_unreachable_upstream_proxy_is_unreachable(tmp_path: Path,
                                                            host: Host) -> None:
    proxy = await EgressProxy.create(str(tmp_path / "egress-"),
                                     upstream=f"http://127.0.0.1:{unused_port()}")
    await proxy.set_allow(["pypi.org"])
    try:
        answer = await ask(proxy, b"GET http://pypi.org/simple/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n")
        await proxy.sync()
    finally:
        await proxy.close()
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert b"could not reach pypi.org:80 through the upstream proxy" in answer
    assert proxy.refused_by_kind == {"unreachable": ["pypi.org:80"]}


async def test_a_pods_proxy_answers_the_pod_alone(host: Host,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """On TCP (Kubernetes): a connection from any other address is closed unanswered and
    logged once; from the pod's, served."""
    port = unused_port()
    proxy = await PodEgressProxy.listen("127.0.0.1", range(port, port + 1), allow_private=True)
    site = f"127.0.0.1:{host.port}"
    request = f"GET http://{site}/ HTTP/1.1\r\nHost: {site}\r\n\r\n".encode()

    async def fetch(ask: bool = True) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(request if ask else b"")
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    try:
        await proxy.set_allow([site])
        await proxy.set_peer("10.42.0.7")
        with caplog.at_level(logging.WARNING, "handoff.egress"):
            strangers = [await fetch(ask=False), await fetch(ask=False)]
            await proxy.sync()
        await proxy.set_peer("127.0.0.1")
        pod = await fetch()
    finally:
        await proxy.close()
    assert proxy.port == port and strangers == [b"", b""]
    assert caplog.messages == ["egress proxy: refused a connection from 127.0.0.1 (not the "
                               "sandbox pod)"]
    assert pod == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    assert len(host.received) == 1 and host.received[0].startswith(b"GET / HTTP/1.1\r\n")


async def test_a_pods_proxy_with_no_free_port_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SandboxError) as error:
            await PodEgressProxy.listen("127.0.0.1", range(port, port + 1), False)
    assert f"no egress proxy on 127.0.0.1 in {port}-{port}" in str(error.value)
    assert f"no free port in {port}-{port}" in str(error.value)


def test_allowlist_entries_name_ports_addresses_and_subdomains() -> None:
    allow = ["[::1]:8080", "[fd00::2]", "*.pythonhosted.org", "Example.COM."]
    assert host_allowed(allow, "::1", 8080) and not host_allowed(allow, "::1", 443)
    assert host_allowed(allow, "fd00::2", 443)
    assert host_allowed(allow, "files.pythonhosted.org", 443)
    assert not host_allowed(allow, "pythonhosted.org", 443)  # the suffix itself is not in
    assert not host_allowed(allow, "evilpythonhosted.org", 443)
    assert host_allowed(allow, "example.com.", 80) and not host_allowed(allow, "example.com",
                                                                        8080)


def test_an_ipv6_address_is_judged_by_the_ipv4_one_it_carries() -> None:
    # 6to4 and Teredo (whose client address is stored inverted) carrying 10.0.0.1 or
    # 127.0.0.1; a 6to4 one carrying 8.8.8.8 is still not globally routable itself.
    assert not public_address("2002:a00:1::1")
    assert not public_address("2001:0:4136:e378:8000:63bf:80ff:fffe")
    assert not public_address("2002:808:808::1")


async def test_an_answer_tells_the_client_the_connection_closes(proxy: EgressProxy,
                                                                host: Host) -> None:
    """One request per connection: the client is told so even when the server says it keeps
    its connections alive (npm would otherwise send its next request into a closed one)."""
    for path in ("/", "/alive"):
        answer = await ask(proxy, f"GET http://localhost:{host.port}{path} HTTP/1.1\r\n"
                                  f"Host: localhost:{host.port}\r\n\r\n".encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK" and body == b"ok"
        assert [x for x in lines if x.lower().startswith((b"connection", b"keep-alive"))] == \
            [b"Connection: close"]
