"""GitHub naming facts Handoff relies on: its branches' prefix, its check run's name, and how
a bot account is told from a person."""

from __future__ import annotations

from typing import Any

AGENT_BRANCH_PREFIX = "agent/issue-"  # every agent branch: agent/issue-<n>-<slug>
CHECK_NAME = "Handoff"  # the check run Handoff posts on each commit it pushes


def looks_like_bot(user: dict[str, Any] | None) -> bool:
    """A GitHub user that is a bot by its type or its ``[bot]`` login (Apps included)."""
    if not user or not isinstance(user, dict):
        return True
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")

# more of a job log than this is not read
# Conclusions of a check that failed (``cancelled``, ``skipped``, ``neutral`` and ``stale`` ask
# nothing of the change); a commit status fails as ``failure`` or ``error``.
FAILED = ("failure", "timed_out", "startup_failure", "action_required")
STATUS_FAILED = ("failure", "error")
