"""The web app: GitHub's webhook receiver and the health endpoints."""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bot import metrics
from bot.jobs.store import Store
from bot.receiver.ingest import Ingestor
from handlers import Context
from handlers.payload import MalformedPayload
from handlers.payload import parse as parse_payload
from handlers.vocabulary import Event

log = logging.getLogger("handoff.web")


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """Check ``X-Hub-Signature-256`` over the raw body in constant time; SHA-1 is refused."""
    if not header or not header.startswith("sha256=") or len(header) != 71:
        return False
    try:
        given = bytes.fromhex(header[7:])
    except ValueError:
        return False
    return hmac.compare_digest(hmac.digest(secret, body, "sha256"), given)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


class WebhookEndpoint:
    """``POST /webhook`` as a bare ASGI app: the hot path skips request and response objects."""

    def __init__(self, ingestor: Ingestor, secret: bytes, max_body: int,
                 on_job: Callable[[], None] | None) -> None:
        self.ingestor, self.secret, self.max_body, self.on_job = ingestor, secret, max_body, on_job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status, answer = await self.handle(scope, receive)
        body = orjson.dumps(answer)
        # A length, so the small answer needs no chunked framing.
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        metrics.webhook_answered(scope, status, answer, started)

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        headers: dict[bytes, bytes] = dict(scope["headers"])  # ASGI names are lowercase
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            return 415, {"error": "Content-Type must be application/json"}
        body = await self.read_capped(headers.get(b"content-length", b""), receive)
        if body is None:
            return 413, {"error": f"body over {self.max_body} bytes"}
        if not signature_ok(self.secret, body, _text(headers.get(b"x-hub-signature-256"))):
            return 401, {"error": "missing or invalid X-Hub-Signature-256"}
        name = _text(headers.get(b"x-github-event"))
        delivery = _text(headers.get(b"x-github-delivery"))
        if not name or not delivery or len(delivery) > 64:
            return 400, {"error": "X-GitHub-Event and X-GitHub-Delivery headers are required, "
                                  "the delivery id at most 64 characters"}
        problem = ""
        if len(name) > 64 or not name.isprintable():
            problem = "X-GitHub-Event must be at most 64 printable characters"
        else:
            try:
                payload = parse_payload(body)
            except MalformedPayload as exc:
                problem = str(exc)
        if problem:  # signed, so GitHub sent it: recorded, and refused with the reason
            log.warning("delivery %s refused: %s", delivery, problem,
                        extra={"delivery": delivery})
            await self.ingestor.reject(name, delivery, problem)
            return 400, {"error": problem}
        outcome = await self.ingestor.submit(Event(name=name, payload=payload,
                                                   delivery_id=delivery, body=body))
        if outcome.status == "rejected":
            return 422, {"status": outcome.status, "error": outcome.detail}
        if outcome.job_id is not None and self.on_job is not None:
            self.on_job()
        return (202 if outcome.status == "accepted" else 200,
                {"status": outcome.status, "detail": outcome.detail, "job": outcome.job_id})

    async def read_capped(self, length: bytes, receive: Receive) -> bytes | None:
        """The body, or None as soon as it passes the cap (before reading it all)."""
        if length.isdigit() and int(length) > self.max_body:
            return None
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def create_app(
    store: Store, secret: bytes, ctx: Context, max_body: int = 25 * 1024 * 1024,
    on_job: Callable[[], None] | None = None, routes: Sequence[BaseRoute] = (),
) -> ASGIApp:
    """Build the ASGI app around an open store; ``on_job`` is called when a job is queued."""
    ingestor = Ingestor(store, ctx)
    webhook = WebhookEndpoint(ingestor, secret, max_body, on_job)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await ingestor.close()  # its writer would be left pending when the loop closes

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        try:
            await store.ping()
        except Exception as exc:  # any database failure means not ready
            return JSONResponse({"status": "unavailable", "database": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    rest = Starlette(lifespan=lifespan, routes=[
        Route("/webhook", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *routes,  # the dashboard (bot/dashboard)
    ])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # The webhook skips the router: it is the one path under load.
        if scope["type"] == "http" and scope["path"] == "/webhook" and \
                scope["method"] == "POST":
            await webhook(scope, receive, send)
        else:
            await rest(scope, receive, send)

    return app
