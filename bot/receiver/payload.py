"""The part of a webhook payload the handlers read, decoded without building the rest.

GitHub's payloads carry a dozen kilobytes of URLs and nested objects the handlers never look at;
building all of them was the single largest cost of a webhook request. The structs below name
what ``handlers/`` and ``Event`` read; msgspec skips everything else while decoding. Absent
fields stay absent (``UNSET``), so the handlers see the same dictionaries, only smaller. A
payload whose shape differs from GitHub's documented one is decoded in full instead, and the
handlers judge it as before.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from msgspec import UNSET, UnsetType


class _Part(msgspec.Struct, omit_defaults=True):
    pass


class User(_Part):
    login: Any = UNSET
    type: Any = UNSET


class Named(_Part):
    name: Any = UNSET


class Repository(_Part):
    full_name: Any = UNSET


class Installation(_Part):
    id: Any = UNSET
    account: User | None | UnsetType = UNSET


class Issue(_Part):
    number: Any = UNSET
    title: Any = UNSET
    body: Any = UNSET
    state: Any = UNSET
    pull_request: Any = UNSET


class Comment(_Part):
    id: Any = UNSET
    body: Any = UNSET
    user: User | None | UnsetType = UNSET


class Review(Comment):
    state: Any = UNSET


class Head(_Part):
    ref: Any = UNSET


class PullRequest(_Part):
    number: Any = UNSET
    head: Head | None | UnsetType = UNSET


class Payload(_Part):
    action: Any = UNSET
    zen: Any = UNSET
    label: Named | None | UnsetType = UNSET
    issue: Issue | None | UnsetType = UNSET
    comment: Comment | None | UnsetType = UNSET
    review: Review | None | UnsetType = UNSET
    pull_request: PullRequest | None | UnsetType = UNSET
    repository: Repository | None | UnsetType = UNSET
    installation: Installation | None | UnsetType = UNSET
    sender: User | None | UnsetType = UNSET
    repositories: list[Repository] | None | UnsetType = UNSET
    repositories_added: list[Repository] | None | UnsetType = UNSET
    repositories_removed: list[Repository] | None | UnsetType = UNSET


_decoder = msgspec.json.Decoder(Payload)


class MalformedPayload(ValueError):
    """The body is not a JSON object."""


def parse(body: bytes) -> dict[str, Any]:
    """The handler-relevant fields of a webhook body; raises MalformedPayload if it is not a
    JSON object."""
    try:
        return msgspec.to_builtins(_decoder.decode(body))  # type: ignore[no-any-return]
    except msgspec.ValidationError:
        pass  # valid JSON in an unexpected shape: decode it all and let the handlers judge
    except msgspec.DecodeError as exc:
        raise MalformedPayload(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedPayload("body is nested too deeply") from None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # pragma: no cover - msgspec refused it first
        raise MalformedPayload(f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedPayload("body must be a JSON object")
    return payload
