"""Which refusal it was: the egress proxy says why it refused a host (not listed, a listed name
that resolves to a non-public address, one that does not resolve, one it could not connect to),
the worker keeps that per host, and the PR groups them with the advice that fits each."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from bot.config import PROMPTS
from bot.executor.sandbox import proxy_server
from bot.executor.sandbox.egress import EgressProxy
from bot.jobs.record import AgentRun
from bot.jobs.verdict import Verdict
from bot.reporter.templates import Templates


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _connect(path: Path, target: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return answer.split(b"\r\n")[0].split(b" ")[1]


async def test_the_proxy_says_which_refusal_it_was(tmp_path: Path) -> None:
    """Real sockets: a listed name resolving to 127.0.0.1 (private addresses not allowed), a
    listed name that does not resolve, and one not listed at all."""
    listening = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    proxy = await EgressProxy.create(str(tmp_path / "egress-"))
    await proxy.set_allow([f"localhost:{port}", "no-such-host.invalid"])
    try:
        answers = [await _connect(proxy.socket, target) for target in (
            f"localhost:{port}", "no-such-host.invalid:443", "pypi.org:443")]
        await proxy.sync()
    finally:
        await proxy.close()
        listening.close()
    assert answers == [b"403", b"502", b"403"]
    assert proxy.refused_by_kind == {"not-listed": ["pypi.org:443"],
                                     "non-public": [f"localhost:{port}"],
                                     "dns": ["no-such-host.invalid:443"]}


async def test_a_listed_host_that_does_not_answer_is_unreachable(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    proxy = proxy_server.Proxy(events.append)
    port = _closed_port()
    proxy.allow, proxy.allow_private = [f"127.0.0.1:{port}"], True
    server = await asyncio.start_unix_server(proxy.serve, path=str(tmp_path / "p.sock"))
    try:
        answer = await _connect(tmp_path / "p.sock", f"127.0.0.1:{port}")
    finally:
        server.close()
    assert answer == b"502"
    assert [(e["denied"], e["kind"]) for e in events] == [(f"127.0.0.1:{port}", "unreachable")]
    assert "could not connect to" in events[0]["why"]


def _summary(agent: AgentRun) -> str:
    context = dict(
        repo="o/r", issue={"number": 1, "title": "T", "body": "B"}, requested_by="a",
        criteria=[], summary="s", base_sha="abcdef0", head_sha="1234567", tests_before="fail",
        tests_after="pass", regression=False, tests_base="fail",
        verdict=Verdict("neutral", "t", "done-unproven"), test_command="pytest",
        test_command_reason="why", iterations=[], model="m", inputs_seen=["issue"],
        inputs_excluded=[], spend=dict(steps=1, input_tokens=1, output_tokens=1,
                                                     cost_usd=0.0, wall_seconds=1),
        egress_denied=agent.egress_denied)
    body = Templates(PROMPTS).render("summary", **context)
    return body.split("## Network access refused", 1)[1].split("\n---", 1)[0]


def test_the_pr_groups_refused_hosts_with_the_advice_for_each() -> None:
    agent = AgentRun(egress_denied={"not-listed": ["evil.example:443"],
                                    "non-public": ["mirror.corp:443"],
                                    "dns": ["no-such-host.invalid:443"],
                                    "unnamed": ["3 more refused, names not shown"]})
    text = _summary(agent)
    groups = [g for g in text.split("\n\n") if g.strip()][1:]
    assert len(groups) == 4, text
    assert "`network.allow`" in groups[0] and "- `evil.example:443`" in groups[0]
    assert "private" in groups[1] and "- `mirror.corp:443`" in groups[1]
    assert "did not resolve" in groups[2] and "- `no-such-host.invalid:443`" in groups[2]
    assert "- `3 more refused, names not shown`" in groups[3]
    assert text.count("network.allow") == 1  # only the hosts not listed are told to add them


def test_a_record_from_before_the_kinds_reads_as_not_listed() -> None:
    agent = AgentRun.model_validate({"egress_denied": ["evil.example:443"]})
    assert agent.egress_denied == {"not-listed": ["evil.example:443"]}
    assert "`network.allow`" in _summary(agent)


async def test_the_jobs_relay_is_reached_by_its_exact_address_only(tmp_path: Path) -> None:
    """A ``relay=`` entry (the worker's relay for an agent CLI) opens that loopback address
    with private addresses not allowed; its name for it, or another port, stays refused."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    proxy = await EgressProxy.create(str(tmp_path / "egress-"))
    await proxy.set_allow([f"{proxy_server.RELAY}127.0.0.1:{port}"])

    async def get(target: str) -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(proxy.socket))
        writer.write(f"GET http://{target}/v1/models HTTP/1.1\r\nHost: {target}\r\n\r\n"
                     .encode())
        got = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        return got.split(b"\r\n")[0].split(b" ")[1]

    try:
        answers = [await get(t) for t in (f"127.0.0.1:{port}", f"localhost:{port}",
                                          f"127.0.0.1:{_closed_port()}")]
    finally:
        await proxy.close()
        listening.close()
    assert answers == [b"204", b"403", b"403"]
