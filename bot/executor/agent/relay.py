"""The job's relay on the worker, through which an agent CLI in the sandbox reaches its model
and the repository's remote MCP servers without holding their keys.

The sandbox gets a token made for the job and the relay's address (on the worker's loopback,
reached through the egress proxy as its ``relay=`` entry). The relay answers only that
token, puts the real model key in the header the token came in (``x-api-key`` or
``Authorization: Bearer``, so both the Anthropic and the OpenAI wire formats pass) and sends
the request on to the configured endpoint's host; a remote MCP server's requests
(``/handoff-mcp/<name>``) get that server's own headers, secrets filled in, instead. Answers,
streamed ones included, pass back as they come. The relay stops when the CLI's run ends, and
its token with it.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bot.github.tls import client_context
from bot.server import base_url, serving

MCP_PATH = "/handoff-mcp/"
# The model APIs' paths the token may use (both wire formats); the key opens nothing else of
# the provider's (files, batches, fine-tuning, the account).
MODEL_PATH = re.compile(r"^(/[^?#]*)?/(messages|chat/completions|completions|responses|models)"
                        r"(/[^?#]*)?$")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# Not passed on either way: hop-by-hop, and what the relay sets itself.
DROPPED = {"host", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
           "trailer", "transfer-encoding", "upgrade", "content-length"}
CREDENTIALS = {"authorization", "x-api-key"}
TIMEOUT = httpx.Timeout(600.0, connect=15.0)


@dataclass
class Upstreams:
    """Where the relay sends requests: the model endpoint (its origin; the CLI keeps the
    endpoint's path) with its key, and each remote MCP server's URL with its headers."""

    model_origin: str
    model_key: str
    mcp: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # redacted from the servers' answers


class JobRelay:
    """One job's relay: ``async with JobRelay(upstreams) as relay`` serves it on
    127.0.0.1; ``relay.url`` and ``relay.token`` are what the sandbox is given."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams
        self.token = secrets.token_urlsafe(32)
        self.url = ""
        self._stack = AsyncExitStack()
        self._http: httpx.AsyncClient | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the relay, as the egress allowlist names it."""
        return urlsplit(self.url).netloc

    def endpoint(self, base_url: str) -> str:
        """``base_url`` (the model's) as the CLI reaches it: the relay's origin, its path."""
        return self.url + urlsplit(base_url).path.rstrip("/")

    def mcp_url(self, name: str) -> str:
        return f"{self.url}{MCP_PATH}{name}"

    async def __aenter__(self) -> JobRelay:
        self._http = await self._stack.enter_async_context(httpx.AsyncClient(
            timeout=TIMEOUT, follow_redirects=False, verify=client_context()))
        app = Starlette(routes=[Route("/{path:path}", self.handle, methods=METHODS)])
        self.url = base_url(await self._stack.enter_async_context(serving(app)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _presented(self, request: Request) -> str | None:
        """The header the job's token came in, or None when it did not come."""
        for name in CREDENTIALS:
            value = request.headers.get(name, "")
            if hmac.compare_digest(value.removeprefix("Bearer ").strip().encode(),
                                   self.token.encode()):
                return name
        return None

    async def handle(self, request: Request) -> Response:
        header = self._presented(request)
        if header is None:
            return JSONResponse({"error": {"message": "not this job's token",
                                           "type": "authentication_error"}}, 401)
        path = request.url.path
        kept = {k: v for k, v in request.headers.items()
                if k.lower() not in DROPPED | CREDENTIALS}
        if path.startswith(MCP_PATH):
            server = self.upstreams.mcp.get(path.removeprefix(MCP_PATH))
            if server is None:
                return JSONResponse({"error": "no such MCP server"}, 404)
            url, headers = server
            return await self._forward(request, url, {**kept, **headers},
                                       self.upstreams.secrets)
        if not MODEL_PATH.match(path):
            return JSONResponse({"error": {"message": "the relay passes the model APIs only",
                                           "type": "permission_error"}}, 403)
        key = self.upstreams.model_key
        value = f"Bearer {key}" if header == "authorization" else key
        query = f"?{request.url.query}" if request.url.query else ""
        return await self._forward(request, self.upstreams.model_origin + path + query,
                                   {**kept, header: value})

    async def _forward(self, request: Request, url: str, headers: dict[str, str],
                       redact: list[str] | None = None) -> Response:
        """``request`` sent to ``url`` with ``headers``; its answer streamed back, line by
        line without the secrets ``redact`` when there are any (as the built-in agent's MCP
        answers are: a server that echoes its headers)."""
        assert self._http is not None
        sent = self._http.build_request(request.method, url, headers=headers,
                                        content=await request.body())
        try:
            answer = await self._http.send(sent, stream=True)
        except httpx.HTTPError as exc:
            return JSONResponse({"error": {"message": f"the relay could not reach "
                                           f"{urlsplit(url).netloc}: {type(exc).__name__}",
                                           "type": "api_error"}}, 502)
        back = {k: v for k, v in answer.headers.items() if k.lower() not in DROPPED}
        body = _raw(answer)
        if redact:
            back.pop("content-encoding", None)
            body = _redacted(answer, [s.encode() for s in redact if s])
        return StreamingResponse(body, status_code=answer.status_code, headers=back,
                                 background=BackgroundTask(answer.aclose))


async def _raw(answer: httpx.Response) -> AsyncIterator[bytes]:
    """The answer's bytes as they arrive (encoded as it came: its headers say so)."""
    async for chunk in answer.aiter_raw():
        yield chunk


async def _redacted(answer: httpx.Response, secrets: list[bytes]) -> AsyncIterator[bytes]:
    """The answer's decoded bytes, whole lines at a time, with ``secrets`` replaced."""

    def clean(data: bytes) -> bytes:
        for secret in secrets:
            data = data.replace(secret, b"[redacted]")
        return data

    held = b""
    async for chunk in answer.aiter_bytes():
        held += chunk
        lines, newline, held = held.rpartition(b"\n")
        if newline:
            yield clean(lines + newline)
    if held:
        yield clean(held)


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def upstreams_for(base_url: str, key: str, mcp: dict[str, tuple[str, dict[str, str]]] | None
                  = None) -> Upstreams:
    return Upstreams(origin(base_url), key, dict(mcp or {}))

