"""Runs inside the sandbox (stdlib only, its source given to ``python3 -c``): starts a local
MCP server, opens a session (``initialize``), sends one request, prints its answer, stops it.

Reads one JSON object on stdin: ``argv``, ``env``, ``protocol`` (the version to ask for),
``method``, ``params``, ``seconds`` and ``cap`` (characters of text kept in the answer).
Prints one JSON object: ``{"result": ...}``, ``{"error": {...}}`` (the server's JSON-RPC
error), or ``{"failed": "why", "stderr": "..."}``.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import IO, Any

STDERR_TAIL = 2000
LIST_LIMIT = 40_000  # characters of a tool list's JSON (the sandbox caps output at 64 KB)


def reader(stream: IO[bytes], out: queue.Queue[Any]) -> None:
    """Each line the server writes, parsed (None for a line that is not JSON), then EOF."""
    for line in stream:
        try:
            out.put(json.loads(line))
        except ValueError:
            out.put(None)
    out.put(EOFError())


def answer(proc: subprocess.Popen[bytes], lines: queue.Queue[Any], wanted: int,
           deadline: float) -> dict[str, Any]:
    """The server's response to request ``wanted``; pings are answered, the rest skipped."""
    while True:
        try:
            message = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise TimeoutError from None
        if isinstance(message, EOFError):
            raise EOFError
        if not isinstance(message, dict):
            continue
        if message.get("method") == "ping" and "id" in message:
            send(proc, {"jsonrpc": "2.0", "id": message["id"], "result": {}})
        elif "method" in message and "id" in message:  # sampling, roots...: not offered
            send(proc, {"jsonrpc": "2.0", "id": message["id"],
                        "error": {"code": -32601, "message": "not supported"}})
        elif message.get("id") == wanted and "method" not in message:
            return message


def send(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()


def capped(result: Any, cap: int) -> Any:
    """The answer with its text blocks cut to ``cap`` characters in all."""
    if not isinstance(result, dict) or not isinstance(result.get("content"), list):
        return result
    room, kept = cap, []
    for block in result["content"]:
        if not isinstance(block, dict):
            continue
        text = block.get("text")
        if isinstance(text, str):
            if room <= 0:
                break
            block = {**block, "text": text[:room] + (
                f"\n[... {len(text) - room} characters cut]" if len(text) > room else "")}
            room -= len(text)
        elif block.get("type") in ("image", "audio"):
            block = {"type": block["type"], "mimeType": block.get("mimeType", ""),
                     "size": len(str(block.get("data", "")))}
        kept.append(block)
    return {**result, "content": kept}


def listed(result: Any, limit: int) -> Any:
    """A tool list cut from its end to ``limit`` characters of JSON (``cut``: how many)."""
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return result
    tools, cut = list(result["tools"]), 0
    while tools and len(json.dumps(tools, ensure_ascii=False)) > limit:
        tools.pop()
        cut += 1
    return {**result, "tools": tools, "cut": cut} if cut else result


def run(job: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + float(job["seconds"])
    try:
        proc = subprocess.Popen(job["argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, **job["env"]})
    except OSError as exc:
        return {"failed": f"could not start {job['argv'][0]}: {exc.strerror or exc}"}
    lines: queue.Queue[Any] = queue.Queue()
    errors: list[bytes] = []
    assert proc.stdout is not None and proc.stderr is not None
    threading.Thread(target=reader, args=(proc.stdout, lines), daemon=True).start()
    tail = threading.Thread(target=lambda: errors.append(proc.stderr.read()),  # type: ignore[union-attr]
                            daemon=True)
    tail.start()
    try:
        send(proc, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": job["protocol"], "capabilities": {},
            "clientInfo": {"name": "handoff", "version": "1"}}})
        hello = answer(proc, lines, 0, deadline)
        if "error" in hello:
            return {"error": hello["error"]}
        send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        send(proc, {"jsonrpc": "2.0", "id": 1, "method": job["method"],
                    "params": job["params"]})
        reply = answer(proc, lines, 1, deadline)
        if "error" in reply:
            return {"error": reply["error"]}
        if job["method"] == "tools/list":
            return {"result": listed(reply.get("result"), LIST_LIMIT)}
        return {"result": capped(reply.get("result"), int(job["cap"]))}
    except TimeoutError:
        return {"failed": f"no answer within {job['seconds']}s"}
    except (EOFError, BrokenPipeError):
        proc.wait(timeout=5)
        tail.join(timeout=2)
        return {"failed": f"the server ended (exit code {proc.returncode}) before it answered",
                "stderr": b"".join(errors).decode("utf-8", "replace")[-STDERR_TAIL:]}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin)), ensure_ascii=False))
