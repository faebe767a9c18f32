"""An upstream proxy for the egress proxy (a corporate network's): the egress proxy still
checks the allowlist and the TLS name itself, then reaches a listed host with CONNECT through
the upstream proxy, which resolves the name; its credentials go to it alone."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.executor.sandbox.egress import EgressProxy

NAME = "registry.corp.example"  # resolves nowhere: only the upstream proxy knows it


class Upstream:
    """A small CONNECT proxy on 127.0.0.1 that sends every tunnel to ``target`` and records
    what it was asked; it wants ``user:secret`` as basic auth."""

    def __init__(self, target: int) -> None:
        self.target, self.asked = target, list[str]()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        self.asked.append(head)
        wanted = "Proxy-Authorization: Basic " + base64.b64encode(b"user:s3cr@t").decode()
        if wanted not in head.splitlines():
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            with contextlib.suppress(OSError):
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


Network = tuple[EgressProxy, Upstream, list[bytes]]


def _client_hello(name: str) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Network]:
    """(egress proxy through the upstream, the upstream, what the target host received)."""
    received: list[bytes] = []

    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        received.append(data)
        if data.startswith(b"GET"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\n"
                         b"simple")
        writer.close()

    host = await asyncio.start_server(target, "127.0.0.1", 0)
    upstream = Upstream(host.sockets[0].getsockname()[1])
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    url = f"http://user:s3cr%40t@127.0.0.1:{server.sockets[0].getsockname()[1]}"
    proxy = await EgressProxy.create(str(tmp_path / "egress-"),
                                     upstream=Settings(egress_upstream_proxy=url)
                                     .egress_upstream_proxy.get_secret_value())
    await proxy.set_allow([NAME, f"{NAME}:8080"])
    try:
        yield proxy, upstream, received
    finally:
        await proxy.close()
        server.close()
        host.close()


async def _ask(proxy: EgressProxy, head: str, then: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(proxy.socket))
    writer.write(head.encode())
    if then:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(then)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_a_tunnel_goes_through_the_upstream_proxy(network: Network) -> None:
    proxy, upstream, received = network
    hello = _client_hello(NAME)
    await _ask(proxy, f"CONNECT {NAME}:443 HTTP/1.1\r\nHost: {NAME}:443\r\n\r\n", hello)
    assert upstream.asked[0].startswith(f"CONNECT {NAME}:443 HTTP/1.1\r\n")
    assert received == [hello]  # the ClientHello reached the host, through the upstream
    assert proxy.allowed == [f"{NAME}:443"]


async def test_a_plain_http_request_goes_through_it_too(network: Network) -> None:
    proxy, upstream, received = network
    answer = await _ask(proxy, f"GET http://{NAME}:8080/simple/ HTTP/1.1\r\nHost: {NAME}:8080"
                               "\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"simple")
    assert upstream.asked[0].startswith(f"CONNECT {NAME}:8080 HTTP/1.1\r\n")
    assert received[0].startswith(b"GET /simple/ HTTP/1.1\r\n")
    assert f"Host: {NAME}:8080".encode() in received[0]


async def test_the_allowlist_and_the_tls_name_are_still_checked_first(network: Network) -> None:
    proxy, upstream, received = network
    refused = await _ask(proxy, "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org\r\n\r\n")
    await _ask(proxy, f"CONNECT {NAME}:443 HTTP/1.1\r\nHost: {NAME}\r\n\r\n",
               _client_hello("attacker.example"))
    await proxy.sync()
    assert refused.startswith(b"HTTP/1.1 403")
    assert proxy.refused_by_kind == {"not-listed": ["pypi.org:443"],
                                     "mismatch": ["attacker.example:443"]}
    assert not any(received)  # not a byte reached the host: the tunnel closed before its hello


async def test_an_upstream_refusal_is_unreachable_and_never_shows_the_password(
        tmp_path: Path, network: Network, caplog: pytest.LogCaptureFixture) -> None:
    proxy, upstream, _ = network
    proxy.upstream = proxy.upstream.replace("s3cr%40t", "wrong")
    await proxy.set_allow([NAME])
    answer = await _ask(proxy, f"CONNECT {NAME}:443 HTTP/1.1\r\nHost: {NAME}\r\n\r\n")
    await proxy.sync()
    assert answer.startswith(b"HTTP/1.1 502") and b"'407'" in answer
    assert proxy.refused_by_kind == {"unreachable": [f"{NAME}:443"]}
    assert "wrong" not in answer.decode() and "wrong" not in caplog.text
    assert "Basic" in upstream.asked[0]  # it was sent, to the upstream proxy alone


def test_the_setting_is_an_http_url_and_a_bad_one_is_not_echoed() -> None:
    with pytest.raises(ValueError) as error:
        Settings(egress_upstream_proxy="https://user:s3cr3t@proxy.corp")
    assert "s3cr3t" not in str(error.value)
    assert "s3cr3t" not in repr(Settings(egress_upstream_proxy="http://u:s3cr3t@p.corp:3128"))
