"""Shared test helpers: real payloads, signing, and events."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

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
