"""The egress proxy under attack from its sandbox (audit round 3: H1, M4; rows 20-23, 41), on
real Podman and real bubblewrap.

Each attack is in ``bench/security.py``; every one worked on the code the audit examined
(a44717a): a flood of connections exhausted the worker's file descriptors, the proxy's socket
was in the Podman sandbox with no egress allowed, an allowed connection carried any Host, any
pipelined request and any SNI, 100.64.0.0/10 counted as public, and refused "hosts" reached
the PR as written.
"""

# ruff: noqa: F811  (``lab`` is the imported fixture, which pytest passes by name)
from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from bench import security
from bench.security import Lab
from bot.executor.sandbox.egress import EgressProxy
from bot.executor.sandbox.proxy_server import (
    MAX_CONNECTIONS,
    MAX_WAITING,
    hello_body,
    hello_sni,
    public_address,
)
from security.test_attacks import check, lab  # noqa: F401  (the fixture, passed by name)


async def test_a_flood_from_the_sandbox_leaves_the_worker_its_files(lab: Lab) -> None:
    evidence = await check(lab, security.proxy_flood_starves_the_worker)
    assert "opened files, ran git, opened SQLite" in evidence


async def test_no_proxy_socket_outside_egress_phases(lab: Lab) -> None:
    await check(lab, security.egress_socket_outside_egress_phases)


async def test_another_host_header_or_a_pipelined_request_never_reaches_upstream(
        lab: Lab) -> None:
    evidence = await check(lab, security.host_header_fronting_and_pipelining)
    assert "attacker-fronted.example:80" in evidence  # refused, and shown for the PR


async def test_a_tunnel_whose_sni_names_another_host_is_refused(lab: Lab) -> None:
    evidence = await check(lab, security.tls_sni_other_than_the_connect_host)
    assert "attacker-fronted.example:" in evidence


async def test_shared_and_metadata_addresses_are_not_public(lab: Lab) -> None:
    await check(lab, security.metadata_and_shared_addresses)


async def test_refused_hosts_are_plain_names_capped_and_counted(lab: Lab) -> None:
    evidence = await check(lab, security.refused_host_text_injection)
    assert "21 entries" in evidence and "11 more refused, names not shown" in evidence


def test_only_globally_routable_addresses_count_as_public() -> None:
    refused = ["100.100.100.200", "100.64.0.1", "169.254.169.254", "10.0.0.1", "127.0.0.1",
               "::1", "fd00::1", "::ffff:100.100.100.200", "64:ff9b::a9fe:a9fe",
               "2002:a9fe:a9fe::1", "0.0.0.0", "224.0.0.1", "192.0.2.1"]
    assert [a for a in refused if public_address(a)] == []
    assert all(public_address(a) for a in ["8.8.8.8", "151.101.0.223", "2606:4700::1111",
                                           "::ffff:8.8.8.8"])


def _client_hello(name: str | None) -> bytes:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def test_the_sni_is_read_from_a_real_client_hello_even_in_pieces() -> None:
    hello = _client_hello("pypi.org")
    assert hello_body(hello[:40]) is None  # not all there yet
    body = hello_body(hello)
    assert body is not None and hello_sni(body) == "pypi.org"
    no_name = hello_body(_client_hello(None))
    assert no_name is not None and hello_sni(no_name) is None
    with pytest.raises(ValueError):
        hello_body(b"SSH-2.0-OpenSSH_9.2\r\n")  # a tunnel that is not TLS


async def test_the_proxy_caps_connections_and_refused_hosts_are_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proxy = await EgressProxy.create(str(tmp_path / "egress-"))
    await proxy.set_allow(["pypi.org"])
    held = []
    try:
        # Half a head each: they take every slot, then every place in the queue. A blocking
        # connect returns once the proxy's backlog has room (asyncio's may report a connect
        # the full backlog refused as done).
        for _ in range(MAX_CONNECTIONS + MAX_WAITING):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(proxy.socket))
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            writer.write(b"GET http://pypi.org/ HTTP/1.1\r\n")
            held.append(writer)
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_unix_connection(str(proxy.socket))
        busy = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        for w in held:
            w.close()
        await asyncio.sleep(0.5)  # the proxy sees them end and frees their slots
        with caplog.at_level(logging.WARNING, "handoff.egress"):
            for _ in range(3):
                reader, writer = await asyncio.open_unix_connection(str(proxy.socket))
                writer.write(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n")
                refused = await asyncio.wait_for(reader.read(), 5)
                writer.close()
            await proxy.sync()
    finally:
        await proxy.close()
    assert busy.startswith(b"HTTP/1.1 503") and refused.startswith(b"HTTP/1.1 403")
    assert proxy.refused == ["evil.example:443"]
    assert [r.getMessage() for r in caplog.records].count(
        "egress denied: evil.example:443 (evil.example:443 is not on the egress allowlist)") == 1
    assert not proxy.socket.exists() and proxy.allowed == []


def test_serve_and_its_worker_raise_their_open_file_limit(tmp_path: Path) -> None:
    """Started as systemd starts a unit without LimitNOFILE (soft 1024), both processes run
    with the soft limit at the hard one."""
    import contextlib
    import os
    import resource
    import subprocess
    import sys
    import time

    from helpers import SECRET, unused_port

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 1024:
        pytest.skip("the hard limit here is 1024: nothing to raise")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--port", str(unused_port())],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)),
        env={**clean, "PYTHONPATH": str(Path(__file__).parents[2]),
             "HANDOFF_DATA_DIR": str(tmp_path / "data"),
             "HANDOFF_WEBHOOK_SECRET": SECRET.decode(), "HANDOFF_STOP_SECONDS": "5"})
    def open_files(pid: str) -> list[str]:
        with contextlib.suppress(OSError, StopIteration):
            return next(line.split()[3:5] for line in Path(f"/proc/{pid}/limits").read_text()
                        .splitlines() if line.startswith("Max open files"))
        return []

    limits: list[list[str]] = []
    try:
        for _ in range(300):  # until both run with their limit raised, or 30 s
            worker = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "bot.cli worker"],
                                    capture_output=True, text=True).stdout.split()
            limits = [open_files(pid) for pid in [str(proc.pid), *worker[:1]]]
            if limits == [[str(hard), str(hard)]] * 2:
                break
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait(30)
    assert limits == [[str(hard), str(hard)]] * 2


async def test_a_request_head_dripped_byte_by_byte_gets_one_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every 0.2 s never trips a per-read timeout; the head's one deadline ends it."""
    from bot.executor.sandbox import proxy_server

    monkeypatch.setattr(proxy_server, "HEAD_DEADLINE", 1.0)
    server = await asyncio.start_unix_server(proxy_server.Proxy(lambda _: None).serve,
                                             path=str(tmp_path / "p.sock"))
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "p.sock"))
    started = asyncio.get_running_loop().time()
    try:
        for byte in b"GET http://pypi.org/ HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            if reader.at_eof() or await _closed(reader):
                break
    except OSError:
        pass
    finally:
        writer.close()
        server.close()
    assert asyncio.get_running_loop().time() - started < 3


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.2) == b""
    except TimeoutError:
        return False


@pytest.mark.podman
async def test_refused_hosts_in_the_pr_are_plain_text(tmp_path: Path) -> None:
    """Audit row 21, end to end: a setup command CONNECTs to a markdown "host" (a team mention
    and a tracking image) and to 30 names; the PR lists 20 plain names and counts the rest."""
    from agent_fixtures import BUGGY_REPO, FIX_SCRIPT

    from devkit.stack import stack

    inject = security.INJECT.replace('os.environ["HTTP_PROXY"]', 'os.environ["HTTPS_PROXY"]')
    files = {**BUGGY_REPO, "inject.py": inject,
             ".github/handoff.yml": "test_command: python3 -m pytest -q -p no:cacheprovider\n"
                                    "setup_command: python3 inject.py\n"}
    async with stack(tmp_path, FIX_SCRIPT) as s:
        s.sim.add_repo("acme/calc", files)
        job = await s.handed_over("acme/calc", "add() subtracts", "Fix add().")
        assert job.state == "succeeded", job.reason
        pr = next(i for i in s.sim.get_repo("acme/calc").issues.values() if i.pull)
    refused = pr.body.split("## Network access refused", 1)[1].split("\n---", 1)[0]
    assert "@acme" not in refused and "![" not in refused and "proxy.png" not in refused
    assert "`host19.example:443`" in refused and "`host20.example:443`" not in refused
    assert "`11 more refused, names not shown`" in refused


async def test_a_tunnel_to_a_name_needs_that_name_as_its_sni(tmp_path: Path) -> None:
    """No SNI is allowed only for an IP-literal CONNECT host (TLS clients send none there); a
    tunnel to a name must name it."""
    from bot.executor.sandbox import proxy_server

    received: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    target = await asyncio.start_server(upstream, "localhost", 0)
    port = target.sockets[0].getsockname()[1]
    proxy = proxy_server.Proxy(lambda _: None)
    proxy.allow, proxy.allow_private = [f"localhost:{port}"], True
    server = await asyncio.start_unix_server(proxy.serve, path=str(tmp_path / "p.sock"))
    answers = []
    try:
        for name in (None, "LOCALHOST."):
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "p.sock"))
            writer.write(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answers.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
            writer.write(_client_hello(name))
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
        await asyncio.sleep(0.2)
    finally:
        server.close()
        target.close()
    assert answers == [b"HTTP/1.1 200 Connection established"] * 2
    sent = [r for r in received if r]  # the refused tunnel's upstream got not a byte
    assert len(sent) == 1 and b"LOCALHOST" in sent[0]
    assert proxy.recorded == {f"localhost:{port}"}  # the nameless one, refused
