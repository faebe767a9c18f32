"""The web app: GitHub's webhook receiver and the health endpoints."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.decisions import Event
from bot.engine import ingest
from bot.store import Store
from handlers import Context

log = logging.getLogger("handoff.web")


class BodyTooLarge(Exception):
    """The request body is over the cap."""


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """Check ``X-Hub-Signature-256`` over the raw body in constant time; SHA-1 is refused."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.encode("utf-8", "replace"))


async def read_capped(request: Request, cap: int) -> bytes:
    """Read the body, stopping as soon as it passes the cap."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    store: Store, secret: bytes, ctx: Context, max_body: int = 25 * 1024 * 1024,
    on_job: Callable[[], None] | None = None,
) -> Starlette:
    """Build the ASGI app around an open store; ``on_job`` is called when a job is queued."""

    async def webhook(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(415, "Content-Type must be application/json")
        try:
            body = await read_capped(request, max_body)
        except BodyTooLarge:
            return _error(413, f"body over {max_body} bytes")
        if not signature_ok(secret, body, request.headers.get("x-hub-signature-256")):
            return _error(401, "missing or invalid X-Hub-Signature-256")
        name = request.headers.get("x-github-event")
        delivery = request.headers.get("x-github-delivery")
        if not name or not delivery or len(delivery) > 64:
            return _error(400, "X-GitHub-Event and X-GitHub-Delivery headers are required")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            log.warning("delivery %s: malformed JSON", delivery)
            return _error(400, "body is not valid JSON")
        if not isinstance(payload, dict):
            return _error(400, "body must be a JSON object")
        outcome = await ingest(store, ctx, Event(name=name, payload=payload, delivery_id=delivery))
        if outcome.job_id is not None and on_job is not None:
            on_job()
        return JSONResponse(
            {"status": outcome.status, "detail": outcome.detail, "job": outcome.job_id},
            status_code=202 if outcome.status == "accepted" else 200,
        )

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        try:
            await store.ping()
        except Exception as exc:  # any database failure means not ready
            return JSONResponse({"status": "unavailable", "database": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    return Starlette(routes=[
        Route("/webhook", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ])
