"""The part of a webhook payload the handlers read, decoded without building the rest, and
checked: every field a handler (or ``Event``) reads is named here with the type GitHub sends.

GitHub's payloads carry a dozen kilobytes of URLs and nested objects the handlers never look at;
building all of them was the single largest cost of a webhook request. The structs below name
what ``handlers/`` and ``Event`` read, with GitHub's types; msgspec skips everything else while
decoding and checks the rest. Absent fields stay absent (``UNSET``), so the handlers see the
same dictionaries, only smaller. A payload whose named fields have another shape is decoded in
full instead, and ``shape_problem`` says what is wrong with it, so the handlers ignore it with
that reason rather than read a field of the wrong type.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import orjson
from msgspec import UNSET, UnsetType

# GitHub's ids and numbers: positive, and within a database's 64-bit integer.
Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
FullName = Annotated[str, msgspec.Meta(pattern=r"^[^/\s]+/[^/\s]+$")]  # owner/name


class _Part(msgspec.Struct, omit_defaults=True):
    pass


class User(_Part):
    login: str | UnsetType = UNSET
    type: str | None | UnsetType = UNSET


class Named(_Part):
    name: str | UnsetType = UNSET


class Repository(_Part):
    full_name: FullName | UnsetType = UNSET


class Listed(_Part):
    """A repository in an installation event's lists."""

    full_name: FullName


class Installation(_Part):
    id: Id | UnsetType = UNSET
    account: User | None | UnsetType = UNSET


class Issue(_Part):
    number: Id | UnsetType = UNSET
    title: str | None | UnsetType = UNSET
    body: str | None | UnsetType = UNSET
    state: str | None | UnsetType = UNSET
    pull_request: dict[str, Any] | None | UnsetType = UNSET


class Comment(_Part):
    id: Id | UnsetType = UNSET
    body: str | None | UnsetType = UNSET
    user: User | None | UnsetType = UNSET


class ReviewComment(Comment):
    """A comment on a line of a pull request (``pull_request_review_comment``)."""

    in_reply_to_id: Id | None | UnsetType = UNSET
    pull_request_review_id: Id | None | UnsetType = UNSET
    author_association: str | None | UnsetType = UNSET


class Review(Comment):
    state: str | None | UnsetType = UNSET


class Head(_Part):
    ref: str | UnsetType = UNSET


class PullRequest(_Part):
    number: Id | UnsetType = UNSET
    head: Head | None | UnsetType = UNSET


class App(_Part):
    slug: str | None | UnsetType = UNSET
    name: str | None | UnsetType = UNSET


class PullRef(_Part):
    """A pull request a check's payload lists (those whose head it ran on)."""

    number: Id | UnsetType = UNSET


class CheckSuite(_Part):
    head_branch: str | None | UnsetType = UNSET
    head_sha: str | UnsetType = UNSET
    conclusion: str | None | UnsetType = UNSET
    app: App | None | UnsetType = UNSET
    pull_requests: list[PullRef] | None | UnsetType = UNSET


class CheckRun(_Part):
    name: str | UnsetType = UNSET
    external_id: str | None | UnsetType = UNSET  # the job that posted it (Handoff's own)
    head_sha: str | UnsetType = UNSET
    conclusion: str | None | UnsetType = UNSET
    app: App | None | UnsetType = UNSET
    check_suite: CheckSuite | None | UnsetType = UNSET
    pull_requests: list[PullRef] | None | UnsetType = UNSET


class WorkflowRun(_Part):
    name: str | None | UnsetType = UNSET
    head_branch: str | None | UnsetType = UNSET
    head_sha: str | UnsetType = UNSET
    conclusion: str | None | UnsetType = UNSET
    pull_requests: list[PullRef] | None | UnsetType = UNSET


class Payload(_Part):
    action: str | None | UnsetType = UNSET
    zen: str | None | UnsetType = UNSET
    label: Named | None | UnsetType = UNSET
    issue: Issue | None | UnsetType = UNSET
    comment: ReviewComment | None | UnsetType = UNSET
    review: Review | None | UnsetType = UNSET
    pull_request: PullRequest | None | UnsetType = UNSET
    repository: Repository | None | UnsetType = UNSET
    installation: Installation | None | UnsetType = UNSET
    sender: User | None | UnsetType = UNSET
    repositories: list[Listed] | None | UnsetType = UNSET
    repositories_added: list[Listed] | None | UnsetType = UNSET
    repositories_removed: list[Listed] | None | UnsetType = UNSET
    # The repository's CI: check runs and suites, workflow runs, commit statuses.
    check_run: CheckRun | None | UnsetType = UNSET
    check_suite: CheckSuite | None | UnsetType = UNSET
    workflow_run: WorkflowRun | None | UnsetType = UNSET
    sha: str | UnsetType = UNSET
    context: str | UnsetType = UNSET
    state: str | UnsetType = UNSET
    branches: list[Named] | None | UnsetType = UNSET


_decoder = msgspec.json.Decoder(Payload)


class MalformedPayload(ValueError):
    """The body is not a JSON object."""


def parse(body: bytes) -> dict[str, Any]:
    """The handler-relevant fields of a webhook body; raises MalformedPayload if it is not a
    JSON object."""
    try:
        return msgspec.to_builtins(_decoder.decode(body))  # type: ignore[no-any-return]
    except msgspec.ValidationError:
        pass  # valid JSON in another shape: decoded whole; shape_problem() says what is odd
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


def shape_problem(payload: dict[str, Any]) -> str:
    """What makes a payload's fields other than GitHub sends them (msgspec's words, with the
    field's path), or "" when every field a handler reads has GitHub's type."""
    try:
        msgspec.convert(payload, Payload)
    except msgspec.ValidationError as exc:
        return str(exc)
    except RecursionError:
        return "a field is nested too deeply"
    return ""
