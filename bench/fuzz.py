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
           "pull_request_review/submitted", "installation/created",
           "installation_repositories/added", "ping/payload")
# Every field a handler or ``Event`` reads: half the mutations land here, where a field read
# without being declared would crash a handler.
READS: list[tuple[Any, ...]] = [
    (top,) for top in ("action", "zen", "label", "issue", "comment", "review", "pull_request",
                       "repository", "installation", "sender", "repositories",
                       "repositories_added", "repositories_removed")] + [
    ("installation", "id"), ("installation", "account"), ("installation", "account", "login"),
    ("sender", "login"), ("sender", "type"), ("repository", "full_name"),
    ("repositories", 0), ("repositories", 0, "full_name"), ("repositories_added", 0),
    ("repositories_added", 0, "full_name"), ("repositories_removed", 0),
    ("issue", "number"), ("issue", "title"), ("issue", "body"), ("issue", "state"),
    ("issue", "pull_request"), ("label", "name"), ("comment", "id"), ("comment", "body"),
    ("comment", "user"), ("comment", "user", "login"), ("comment", "user", "type"),
    ("review", "id"), ("review", "state"), ("review", "body"), ("review", "user"),
    ("review", "user", "login"), ("pull_request", "number"), ("pull_request", "head"),
    ("pull_request", "head", "ref")]
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


def mutate(rng: random.Random, base: dict[str, Any], own: str = "issues") -> tuple[str, bytes]:
    """One odd (event name, body), most often under the event ``base`` was sent as."""
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
        path = rng.choice(READS if rng.random() < 0.5 else paths)
        with contextlib.suppress(KeyError, IndexError, TypeError):
            _set(data, path, rng.choice(ODD_VALUES + [_nested(rng.randint(50, 400))]))
    pick = rng.random()
    event = own if pick < 0.6 else rng.choice(EVENTS[:6]) if pick < 0.85 else rng.choice(EVENTS)
    return event, json.dumps(data).encode()


def triggering(base: dict[str, Any]) -> dict[str, Any]:
    """A fixture changed so that, unmutated, its handler acts on it (a job, a cancel, an
    installation): the trigger label, a command, a review asking for changes on an agent PR."""
    base["installation"] = {"id": 42, "account": {"login": "acme"}}
    if isinstance(base.get("label"), dict):
        base["label"]["name"] = "agent"
    if isinstance(base.get("comment"), dict):
        base["comment"]["body"] = "/agent please"
    if isinstance(base.get("review"), dict):
        base["review"].update(state="changes_requested", body="Please rename it.")
        base["pull_request"]["head"]["ref"] = "agent/issue-1-x"
    return base


def deliveries(count: int, secret: bytes, seed: int = 12) -> Iterator[tuple[dict[str, bytes],
                                                                             bytes]]:
    """``count`` signed odd deliveries: (headers, UTF-8 encoded, and body)."""
    rng = random.Random(seed)
    bases = [(name.split("/")[0], triggering(json.loads((WEBHOOKS / f"{name}.json")
                                                        .read_text())))
             for name in SOURCES]
    for n in range(count):
        own, base = rng.choice(bases)
        event, body = mutate(rng, base, own)
        delivery = f"fuzz-{seed}-{n}" if rng.random() < 0.9 else \
            rng.choice([f"fz {n}", (f"{n}-" + "d" * 64)[:64], f"fuzz-{seed}-{n}-ü"])
        headers = {"content-type": "application/json", "x-github-event": event,
                   "x-github-delivery": delivery,
                   "x-hub-signature-256": "sha256=" + hmac.new(secret, body,
                                                               hashlib.sha256).hexdigest()}
        yield {k: v.encode() for k, v in headers.items()}, body
