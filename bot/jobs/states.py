"""A job's states and the categories of failure, each defined once.

Both are string enums: they are stored, compared and rendered as their plain values. Adding a
failure category means adding it here and its line in ``bot/reporter/report.py``'s ``STEPS`` (a
test checks that every category has one).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where a job is: waiting, claimed by a worker, or ended one of three ways."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Plain strings, for SQL.
ACTIVE_STATES = (State.QUEUED.value, State.RUNNING.value)
FINAL_STATES = (State.SUCCEEDED.value, State.FAILED.value, State.CANCELLED.value)


class Failure(StrEnum):
    """Why a job did not end in a pull request or a commit."""

    NOT_PERMITTED = "not-permitted"
    NOT_CONFIGURED = "not-configured"
    CONFIG_ERROR = "config-error"
    SETUP_FAILED = "setup-failed"
    DISK_LIMIT = "disk-limit"
    SANDBOX_LIMIT = "sandbox-limit"
    MODEL_ERROR = "model-error"
    BUDGET_EXHAUSTED = "budget-exhausted"
    MONTHLY_BUDGET = "monthly-budget"
    AGENT_ERROR = "agent-error"
    NO_CHANGES = "no-changes"
    PUSH_REFUSED = "push-refused"
    GITHUB_ERROR = "github-error"
    WORKER_LOST = "worker-lost"
    INTERNAL = "internal"
    CANCELLED = "cancelled"
