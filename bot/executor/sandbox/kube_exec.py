"""Exec in a pod over the API server's websocket (the channel protocol ``kubectl exec`` uses).

Each binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the final
``Status`` (Success, or Failure with the exit code as a cause). v5.channel.k8s.io can close
stdin (channel 255); v4 cannot, so the commands here never wait for stdin's end: they are told
how many bytes to read (``head -c N``). The command line goes in the URL (and the API
server's audit log); secrets and long texts go on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx_ws

from bot.executor.sandbox.base import SandboxError

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
CHUNK = 32 * 1024
MAX_MESSAGE = 1 << 20

Sink = Callable[[bytes], object]


@dataclass
class Capped:
    """Output kept up to ``cap`` bytes; the rest is counted, not kept."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def __call__(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))


def exit_code(status: dict[str, Any]) -> int:
    """The exit code a ``Status`` on the error channel reports; an exec that failed
    without one (no such container, the runtime refused) is a SandboxError."""
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return int(cause["message"])
    raise SandboxError(f"exec failed: {status.get('message') or status}")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start:start + CHUNK]


async def _send(ws: httpx_ws.AsyncWebSocketSession, stdin: AsyncIterator[bytes]) -> None:
    async for chunk in stdin:
        await ws.send_bytes(bytes([STDIN]) + chunk)
    if ws.subprotocol == PROTOCOLS[0]:
        await ws.send_bytes(bytes([CLOSE, STDIN]))


async def _receive(ws: httpx_ws.AsyncWebSocketSession, stdout: Sink, stderr: Sink
                   ) -> dict[str, Any]:
    while True:
        try:
            message = await ws.receive_bytes()
        except httpx_ws.WebSocketDisconnect as exc:
            raise SandboxError(f"exec ended without a status ({exc.code} {exc.reason})") \
                from exc
        if not message:
            continue
        channel, body = message[0], message[1:]
        if not body:  # the server opens each channel with an empty message
            continue
        if channel == STDOUT:
            stdout(body)
        elif channel == STDERR:
            stderr(body)
        elif channel == ERROR:
            status: dict[str, Any] = json.loads(body)
            return status


def upgrade_error(exc: httpx_ws.WebSocketUpgradeError) -> SandboxError:
    """The API server's refusal (a ``Status``: pod not found, container not running, RBAC)."""
    response = exc.response
    try:
        message = json.loads(response.read()).get("message", "")
    except (ValueError, AttributeError, RuntimeError):
        message = ""
    return SandboxError(f"exec refused: {response.status_code} {message}".strip())


async def pod_exec(api: Any, namespace: str, pod: str, container: str, argv: list[str],
                   stdin: bytes | AsyncIterator[bytes] | None, stdout: Sink, stderr: Sink
                   ) -> int:
    """Run ``argv`` in the container; returns its exit code. Output goes to the sinks as
    it comes. Cancel it to give up waiting (the process in the pod is not stopped by that)."""
    params: list[tuple[str, str]] = [("command", arg) for arg in argv]
    params += [("container", container), ("stdout", "true"), ("stderr", "true"),
               ("stdin", "true" if stdin is not None else "false")]
    try:
        async with api.open_websocket(version="v1", namespace=namespace,
                                      url=f"pods/{pod}/exec", params=params,
                                      subprotocols=PROTOCOLS,
                                      max_message_size_bytes=MAX_MESSAGE) as ws:
            source = _chunks(stdin) if isinstance(stdin, bytes) else stdin
            sender = asyncio.ensure_future(_send(ws, source)) if source is not None else None
            try:
                status = await _receive(ws, stdout, stderr)
            finally:
                if sender is not None:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError, httpx_ws.HTTPXWSException):
                        await sender
    except httpx_ws.WebSocketUpgradeError as exc:
        raise upgrade_error(exc) from exc
    except (httpx_ws.HTTPXWSException, OSError) as exc:
        raise SandboxError(f"exec failed: {exc}") from exc
    return exit_code(status)
