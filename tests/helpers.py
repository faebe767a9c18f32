"""Shared test helpers: real payloads, signing, and events."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import hmac
import http.server
import json
import shutil
import socket
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot.jobs.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
WEBHOOKS = FIXTURES / "github-webhooks"
SECRET = b"test-webhook-secret"


def payload(name: str) -> dict[str, Any]:
    """A real GitHub example payload, e.g. ``issues/labeled``; a fresh copy each call."""
    return copy.deepcopy(json.loads((WEBHOOKS / f"{name}.json").read_text()))


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def headers(event: str, body: bytes, delivery: str | None = None,
            secret: bytes = SECRET) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "x-hub-signature-256": sign(body, secret),
    }


def labeled(label: str = "agent", number: int = 1) -> dict[str, Any]:
    """GitHub's ``issues.labeled`` example with the given label and an installation."""
    data = payload("issues/labeled")
    data["label"]["name"] = label
    data["issue"]["number"] = number
    data["installation"] = {"id": 42, "node_id": "x"}
    return data


def comment(body: str, on_pr: bool = False, number: int = 1,
            user_type: str = "User") -> dict[str, Any]:
    """GitHub's ``issue_comment.created`` example with the given text."""
    data = payload("issue_comment/created")
    data["comment"]["body"] = body
    data["comment"]["user"]["type"] = user_type
    data["issue"]["number"] = number
    if on_pr:
        data["issue"]["pull_request"] = {"url": "https://api.github.com/x"}
    else:
        data["issue"].pop("pull_request", None)
    return data


@contextlib.contextmanager
def package_index(root: Path, wheels: list[Path], address: tuple[str, int] = ("127.0.0.1", 0),
                  host: str = "127.0.0.1", hits: list[str] | None = None,
                  token: str = "") -> Iterator[str]:
    """A PEP 503 simple index on ``address`` serving ``wheels`` (a mirror such as devpi
    would); yields its URL, with ``host`` as its host name. Each path asked for is appended
    to ``hits``. With ``token`` it is private, as a company's index is: every request needs
    it (HTTP Basic with any user, or Bearer)."""
    for wheel in wheels:
        folder = root / "simple" / wheel.name.split("-")[0].lower()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, folder)
        with (folder / "index.html").open("a") as index:
            index.write(f'<a href="{wheel.name}">{wheel.name}</a>\n')

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if hits is not None:
                hits.append(self.path)
            super().do_GET()

        def send_head(self):  # type: ignore[no-untyped-def]
            given = self.headers.get("Authorization", "")
            basic = given.startswith("Basic ") and base64.b64decode(
                given[6:]).decode(errors="replace").partition(":")[2] == token
            if token and not (basic or given == f"Bearer {token}"):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="private"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return super().send_head()

    server = http.server.ThreadingHTTPServer(address, Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


def unused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (a server that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wheel(folder: Path, name: str, code: str) -> Path:
    """A minimal, valid wheel of a one-module package (RECORD with its hashes)."""
    files = {f"{name}/__init__.py": code,
             f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\n"
                                               "Version: 1.0\n",
             f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                            "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = ""
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record += f"{path},sha256={digest.decode()},{len(text.encode())}\n"
    record += f"{name}-1.0.dist-info/RECORD,,\n"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name_, text in {**files, f"{name}-1.0.dist-info/RECORD": record}.items():
            zf.writestr(name_, text)
    return path


async def seed_state(store: Any, job_id: int, state: str, **values: Any) -> None:
    """Put a job straight into ``state``, as if its history had happened (a fixture for views
    of jobs, such as the dashboard's). This is the one write that skips the transition table
    of bot/jobs/states.py on purpose; the store's own writes cannot."""
    import time

    from bot.jobs.schema import jobs

    stmt = jobs.update().where(jobs.c.id == job_id).values(
        state=state, updated_at=time.time(), **values)
    await store.write(lambda conn: conn.execute(stmt))


async def queue(store: Store, issue: int = 1) -> int:
    """A job queued straight in the store (no delivery), for the worker's tests."""
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo="o/r", issue_number=issue, requested_by="alice",
        installation_id=1))
    assert job_id is not None
    return job_id


@contextlib.contextmanager
def json_log() -> Iterator[list[dict[str, Any]]]:
    """Every line logged in the block, as the JSON log format writes it (parsed, at INFO)."""
    import io
    import logging

    from bot import logs

    out, lines = io.StringIO(), []
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        lines += [json.loads(raw) for raw in out.getvalue().splitlines()]


def name_their_ids(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines about a job or a delivery ("job 12: ...", "delivery abc ...") that do not
    carry its id as a field (empty: all do)."""
    import re

    wrong = []
    for line in lines:
        about = re.match(r"(job|delivery) (\S+?)[:\s]", line["message"])
        if about and str(line.get(about[1])) != about[2]:
            wrong.append(line)
    return wrong
