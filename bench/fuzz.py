"""Correctly signed but odd webhook deliveries, made from GitHub's example payloads.

Each mutation keeps the payload signed with the right secret, so it passes the signature check
and reaches the handlers and the database: non-object values where objects are expected,
integers past 2^63 and 2^31, deep nesting, NUL characters, long and odd event names and
delivery ids. Used by tests/test_faults.py and bench/faults.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WEBHOOKS = Path(__file__).resolve().parent.parent / "tests/fixtures/github-webhooks"
SOURCES = ("issues/labeled", "issues/unlabeled", "issue_comment/created", "issues/edited",
           "pull_request_review/submitted", "installation/created", "ping/payload")
ODD_VALUES: list[Any] = [
    None, True, 0, -1, 2**63, 2**64 + 7, -(2**63) - 1, 2**31, 2**31 + 5, 10**30, 1.5e308,
    "", "\x00", "a\x00b", "x" * 5000, "🙂" * 50, [], [1, 2], {}, {"id": "nope"},
    "agent", {"name": "agent"}, {"full_name": 7}, {"full_name": "a/b\x00c"},
]
EVENTS = ["issues", "issue_comment", "pull_request_review", "installation", "ping",
          "installation_repositories", "x" * 200, "issues\tx", "ünïcode", "e" * 64, "push"]


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def mutate(rng: random.Random, base: dict[str, Any]) -> tuple[str, bytes]:
    """One odd (event name, body)."""
    data = json.loads(json.dumps(base))
    kind = rng.random()
    if kind < 0.05:
        depth = rng.choice([600, 2000, 5000])
        head = b'{"action": "labeled", "x": ' if rng.random() < 0.5 else b""
        return rng.choice(EVENTS), head + b'{"a": [' * depth + b"1" + b"]}" * depth + \
            (b"}" if head else b"")
    if kind < 0.1:
        return rng.choice(EVENTS), rng.choice([b"[]", b"1", b'"x"', b"null", b"{}",
                                               b'{"a":1e999}', b'{"a": "\\ud800"}'])
    paths = list(_paths(data))
    for _ in range(rng.randint(1, 4)):
        if not paths:
            break
        path = rng.choice(paths)
        with contextlib.suppress(KeyError, IndexError, TypeError):
            _set(data, path, rng.choice(ODD_VALUES + [_nested(rng.randint(50, 400))]))
    return rng.choice(EVENTS[:5]) if rng.random() < 0.8 else rng.choice(EVENTS), \
        json.dumps(data).encode()


def deliveries(count: int, secret: bytes, seed: int = 12) -> Iterator[tuple[dict[str, bytes],
                                                                             bytes]]:
    """``count`` signed odd deliveries: (headers, UTF-8 encoded, and body)."""
    rng = random.Random(seed)
    bases = [json.loads((WEBHOOKS / f"{name}.json").read_text()) for name in SOURCES]
    for base in bases:
        base["installation"] = {"id": 42}
    for n in range(count):
        event, body = mutate(rng, rng.choice(bases))
        delivery = f"fuzz-{seed}-{n}" if rng.random() < 0.9 else \
            rng.choice([f"fz {n}", (f"{n}-" + "d" * 64)[:64], f"fuzz-{seed}-{n}-ü"])
        headers = {"content-type": "application/json", "x-github-event": event,
                   "x-github-delivery": delivery,
                   "x-hub-signature-256": "sha256=" + hmac.new(secret, body,
                                                               hashlib.sha256).hexdigest()}
        yield {k: v.encode() for k, v in headers.items()}, body
