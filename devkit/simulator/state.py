"""The simulator's in-memory world: repositories, issues, PRs, tokens, deliveries."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse

_ids = itertools.count(1000)


def next_id() -> int:
    return next(_ids)


@dataclass
class User:
    login: str
    type: str = "User"
    id: int = field(default_factory=next_id)


@dataclass
class Comment:
    id: int
    body: str
    user: User
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    reactions: list[tuple[str, str]] = field(default_factory=list)
    history: list[str] = field(default_factory=list)  # earlier bodies, oldest first


@dataclass
class Issue:
    number: int
    title: str
    body: str
    user: User
    state: str = "open"
    labels: list[str] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    reactions: list[tuple[str, str]] = field(default_factory=list)
    pull: Pull | None = None
    id: int = field(default_factory=next_id)
    created_at: float = field(default_factory=time.time)


@dataclass
class ReviewComment:
    id: int
    body: str
    user: User
    path: str
    line: int | None
    in_reply_to: int | None = None
    review_id: int | None = None
    diff_hunk: str = ""
    commit_id: str = ""
    reactions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Review:
    id: int
    user: User
    state: str
    body: str
    submitted_at: float = field(default_factory=time.time)


@dataclass
class Pull:
    head: str
    base: str
    draft: bool = False
    merged: bool = False
    reviews: list[Review] = field(default_factory=list)
    review_comments: list[ReviewComment] = field(default_factory=list)


@dataclass
class CheckRun:
    id: int
    name: str
    head_sha: str
    status: str = "queued"
    conclusion: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    details_url: str | None = None
    external_id: str | None = None
    # Another App's run (its slug; "" is the simulated App itself), from devkit/simulator/ci.py
    app: str = ""
    suite_id: int | None = None
    started_at: float | None = None
    completed_at: float | None = None
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Repo:
    owner: str
    name: str
    installation_id: int
    path: Path
    default_branch: str = "main"
    private: bool = True
    archived: bool = False
    collaborators: dict[str, str] = field(default_factory=dict)  # login -> permission
    issues: dict[int, Issue] = field(default_factory=dict)
    check_runs: dict[int, CheckRun] = field(default_factory=dict)
    id: int = field(default_factory=next_id)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def next_number(self) -> int:
        return max(self.issues, default=0) + 1


@dataclass
class Token:
    token: str
    installation_id: int
    repositories: list[str] | None  # names (without owner) or None for all
    permissions: dict[str, str]
    expires_at: float

    def allows(self, repo: Repo, permission: str, level: str) -> bool:
        if self.repositories is not None and repo.name not in self.repositories:
            return False
        granted = self.permissions.get(permission)
        return granted == "write" or (granted == "read" and level == "read")


@dataclass
class Installation:
    id: int
    account: str
    permissions: dict[str, str]
    suspended: bool = False


@dataclass
class Delivery:
    id: int
    guid: str
    event: str
    action: str
    payload: bytes
    attempts: list[dict[str, Any]] = field(default_factory=list)
    installation_id: int | None = None
    repository_id: int | None = None

    @property
    def status(self) -> str:
        return self.attempts[-1]["status"] if self.attempts else "pending"


@dataclass
class Fault:
    kind: str  # 5xx | secondary | 429 | primary | slow | 422
    count: int
    retry_after: int = 1
    reset_in: int = 1
    delay: float = 0.0
    status: int = 502
    match: str = ""  # only requests whose "METHOD /path" contains this (all when empty)
    # 422: the validation error's message, as GitHub words it ("No commits between main and
    # agent/issue-1-x", seen when a pull request is opened just after its push)
    message: str = "Validation Failed"


@dataclass
class RegisteredApp:
    """An App made through the manifest flow (``/settings/apps/new``)."""

    id: int
    slug: str
    name: str
    owner: str
    pem: str
    webhook_secret: str
    client_id: str
    client_secret: str
    manifest: dict[str, Any]
    code: str
    converted: bool = False
    created_at: float = field(default_factory=time.time)


@dataclass
class Grant:
    """A code GitHub's authorize page gave a browser for one App and person (10 minutes)."""

    code: str
    client_id: str
    login: str
    redirect_uri: str
    expires_at: float
    used: bool = False


@dataclass
class UserToken:
    """A user access token (``ghu_``): what a person let an App do in their name."""

    token: str
    login: str
    client_id: str
    expires_at: float
    refresh_token: str = ""


@dataclass
class World:
    """Everything the simulator knows."""

    root: Path
    app_id: int = 4242
    app_slug: str = "handoff"
    repos: dict[str, Repo] = field(default_factory=dict)
    installations: dict[int, Installation] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    rate_remaining: int = 5000
    apps: dict[int, RegisteredApp] = field(default_factory=dict)  # made from manifests
    # The App's OAuth side (its web flow signs people in with user access tokens).
    client_id: str = "Iv1.5a1de0ff00c0ffee"
    client_secret: str = field(default_factory=lambda: secrets.token_hex(20))
    callback_urls: list[str] = field(default_factory=list)
    people: dict[str, User] = field(default_factory=dict)  # login -> the one User of that name
    web_sessions: dict[str, str] = field(default_factory=dict)  # browser cookie -> login
    authorized: set[tuple[str, str]] = field(default_factory=set)  # (login, client_id)
    grants: dict[str, Grant] = field(default_factory=dict)
    user_tokens: dict[str, UserToken] = field(default_factory=dict)

    def repo(self, owner: str, name: str) -> Repo | None:
        return self.repos.get(f"{owner}/{name}".lower())


class GitHubError(Exception):
    """An error answer in GitHub's shape."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"message": self.message,
                                "documentation_url": "https://docs.github.com/rest"}
        if self.errors is not None:
            body["errors"] = self.errors
        return JSONResponse(body, status_code=self.status, headers=self.headers)
