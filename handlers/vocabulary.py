"""The handlers' vocabulary: the event a handler reads and what it may decide (ingest carries
the decisions out).

These are made for every webhook delivery, so they are slotted rather than frozen: a frozen
dataclass sets each field through ``object.__setattr__``, four times the cost. Nothing changes
them after a handler returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CI_FIX = "ci-fix"  # an iteration that fixes the repository's own checks on an agent PR



@dataclass(slots=True)
class Event:
    """One webhook delivery as the handlers see it."""

    name: str
    payload: dict[str, Any]
    delivery_id: str = ""
    body: bytes = b""  # the signed bytes: a replay under a new delivery id is found by them

    @property
    def action(self) -> str:
        action = self.payload.get("action")
        return action if isinstance(action, str) else ""

    @property
    def repo(self) -> str:
        repository = self.payload.get("repository")
        name = repository.get("full_name") if isinstance(repository, dict) else None
        return name if isinstance(name, str) else ""

    @property
    def installation_id(self) -> int | None:
        installation = self.payload.get("installation")
        value = installation.get("id") if isinstance(installation, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def sender(self) -> str:
        sender = self.payload.get("sender")
        login = sender.get("login") if isinstance(sender, dict) else None
        return login if isinstance(login, str) else ""


@dataclass(slots=True)
class Ignore:
    """Acknowledge and do nothing; the reason is recorded with the delivery."""

    reason: str


@dataclass(slots=True)
class Pong:
    """Answer GitHub's ping."""

    zen: str = ""


@dataclass(slots=True)
class StartJob:
    """Queue a job for an issue (implement) or its agent PR (retry, review)."""

    kind: str
    repo: str
    installation_id: int | None
    issue_number: int | None
    requested_by: str
    pr_number: int | None = None
    feedback: str = ""
    trigger: str = ""
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CancelJob:
    """Cancel the active job of an issue or agent PR."""

    repo: str
    requested_by: str
    reason: str
    issue_number: int | None = None
    pr_number: int | None = None
    only_queued: bool = False
    # A /cancel command: it acts only once its author is found to have write access.
    command: bool = False
    # Closing the issue: queued jobs end at once, a running one only once the closer is found
    # to have write access (the issue's author may have read access only).
    check_running: bool = False
    comment_id: int | None = None


@dataclass(slots=True)
class RecordInstallation:
    """Remember an installation and the repositories it covers."""

    installation_id: int
    account: str
    action: str
    repositories_added: tuple[str, ...] = ()
    repositories_removed: tuple[str, ...] = ()


@dataclass(slots=True)
class RecordEdit:
    """An issue's title or body changed: its active job hears of it, with who changed it."""

    repo: str
    issue_number: int
    editor: str
    title: str
    body: str


Decision = Ignore | Pong | StartJob | CancelJob | RecordInstallation | RecordEdit
