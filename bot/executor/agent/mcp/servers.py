"""How Handoff talks to one MCP server: a local one inside the sandbox (through the sandbox's
own ``exec``, one short session per request), a remote one from the worker with the MCP SDK
(streamable HTTP, only to a host on the egress allowlist)."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from mcp import ClientSession, McpError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import LATEST_PROTOCOL_VERSION, PaginatedRequestParams

from bot.executor.agent.tools import MAX_RESULT_CHARS
from bot.executor.repo_config import SECRET_REF, McpServer
from bot.executor.sandbox import Sandbox
from bot.executor.sandbox.proxy_server import host_allowed, public_address
from bot.github.tls import client_context

RELAY = Path(__file__).with_name("sandbox_relay.py").read_text()
ANSWER_CAP = MAX_RESULT_CHARS  # characters of text an answer keeps in the sandbox


class ServerError(Exception):
    """The server could not be reached or did not answer; the message says why."""


class Server(Protocol):
    name: str

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The result of one JSON-RPC request; ``ServerError`` when there is none."""
        ...


class LocalServer:
    """A stdio server run inside the sandbox by a small relay (``sandbox_relay.py``) for each
    request, under the same limits, user and network as the agent's commands."""

    def __init__(self, name: str, config: McpServer, sandbox: Sandbox) -> None:
        self.name, self.config, self.sandbox = name, config, sandbox

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.config.command is not None
        job = {"argv": [self.config.command, *self.config.args], "env": self.config.env,
               "protocol": LATEST_PROTOCOL_VERSION, "method": method, "params": params,
               "seconds": self.config.timeout, "cap": ANSWER_CAP}
        done = await self.sandbox.exec(f"python3 -c {shlex.quote(RELAY)}",
                                       timeout=self.config.timeout + 10,
                                       stdin=json.dumps(job).encode())
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            raise ServerError(f"the relay in the sandbox ended with {done.describe()}: "
                              f"{(done.stderr or done.stdout)[-300:]}") from None
        if "failed" in answer:
            tail = str(answer.get("stderr") or "").strip()[-300:]
            raise ServerError(str(answer["failed"]) + (f"; it wrote: {tail}" if tail else ""))
        if "error" in answer:
            raise ServerError(f"the server answered an error: "
                              f"{str(answer['error'].get('message', answer['error']))[:300]}")
        return dict(answer.get("result") or {})


class RemoteServer:
    """A streamable HTTP server, reached from the worker (its secrets never enter the
    sandbox), with one session per request."""

    def __init__(self, name: str, config: McpServer, headers: dict[str, str]) -> None:
        self.name, self.config, self.headers = name, config, headers

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.config.url is not None
        try:
            return await asyncio.wait_for(self._request(method, params), self.config.timeout)
        except (TimeoutError, McpError, httpx.HTTPError, OSError, ExceptionGroup) as exc:
            raise ServerError(self._why(innermost(exc))) from exc

    def _why(self, exc: BaseException) -> str:
        """What a person reads of a failed request."""
        if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
            return f"no answer within {self.config.timeout:.0f}s"
        if isinstance(exc, McpError):
            return f"the server answered an error: {str(exc)[:300]}"
        return f"unreachable: {type(exc).__name__}: {str(exc)[:200]}".rstrip(": ")

    async def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.config.url is not None
        timeout = timedelta(seconds=self.config.timeout)
        # No redirects: one could lead off the allowed host.
        # The client's own timeout a little later than the request's: a silent server is
        # "no answer within", never an httpx read timeout racing it.
        async with (httpx.AsyncClient(headers=self.headers, timeout=self.config.timeout + 5,
                                      follow_redirects=False, verify=client_context()) as http,
                    streamable_http_client(self.config.url, http_client=http) as (read, write,
                                                                                  _),
                    ClientSession(read, write, read_timeout_seconds=timeout) as session):
            await session.initialize()
            if method == "tools/list":
                cursor = params.get("cursor")
                listed = await session.list_tools(
                    params=PaginatedRequestParams(cursor=cursor) if cursor else None)
                return listed.model_dump(mode="json", by_alias=True, exclude_none=True)
            called = await session.call_tool(params["name"], params.get("arguments"))
            return called.model_dump(mode="json", by_alias=True, exclude_none=True)


def innermost(exc: BaseException) -> BaseException:
    """The first error inside the task groups the MCP SDK wraps errors in."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def reachable(url: str, allow: list[str], allow_private: bool) -> str:
    """Why a remote server may not be reached ("" when it may): its host must be on the
    allowlist and, unless private addresses are allowed, resolve to public ones only."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if not host_allowed(allow, host, port):
        return f"{host}:{port} is not on the egress allowlist (add it to `network.allow`)"
    if allow_private:
        return ""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"{host} does not resolve ({exc.strerror or exc})"
    if private := [str(a[4][0]) for a in found if not public_address(str(a[4][0]))]:
        return f"{host} resolves to an address that is not public ({private[0]})"
    return ""


def fill_headers(config: McpServer, values: dict[str, str]) -> dict[str, str]:
    """The configured headers with ``${NAME}`` replaced by the secrets' values."""
    return {k: SECRET_REF.sub(lambda m: values[m.group(1)], v)
            for k, v in config.headers.items()}
