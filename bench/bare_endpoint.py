"""The baseline for bench/ingest.py: a bare uvicorn endpoint that only checks the HMAC."""

from __future__ import annotations

import hashlib
import hmac
import os

SECRET = os.environ.get("BENCH_SECRET", "bench-secret").encode()


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = dict(scope["headers"])
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected.encode(), headers.get(b"x-hub-signature-256", b""))
    await send({"type": "http.response.start", "status": 202 if ok else 401,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok" if ok else b"bad"})
