"""A job's states, the one table of how it moves between them, and the categories of failure.

Every change of a job's state goes through ``TRANSITIONS``: the store builds its SQL from
``move(event)`` (the states a job may be in for the event, and the state it goes to), so a
write that finds the job in another state changes nothing. ``State`` and ``Failure`` are
string enums: they are stored, compared and rendered as their plain values. Adding a failure
category means adding it here and its line in ``bot/reporter/report.py``'s ``STEPS`` (a test
checks that every category has one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """Where a job is: waiting, claimed by a worker, or ended one of three ways."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Event(StrEnum):
    """What moves a job from one state to another."""

    CLAIM = "claim"  # a worker takes a queued job with a lease
    TAKE_OVER = "take-over"  # a worker takes a running job whose lease ran out (its worker died)
    SUCCEED = "succeed"
    FAIL = "fail"  # the worker ends the job with a failure category
    REFUSE = "refuse"  # a queued job's requester may not ask: it ends before it runs
    CANCEL = "cancel"  # a checked cancel ends a queued job; a running one ends when it stops
    HAND_BACK = "hand-back"  # the worker stops (SIGTERM): the job goes back, no attempt spent
    DEFER = "defer"  # GitHub's rate limit, GitHub away or a full disk: back until a time


# Where a new job starts (the store's insert).
INITIAL = State.QUEUED

# The one table: (state, event) -> the next state. Anything else is refused.
TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (State.QUEUED, Event.CLAIM): State.RUNNING,
    (State.QUEUED, Event.REFUSE): State.FAILED,
    (State.QUEUED, Event.CANCEL): State.CANCELLED,
    (State.RUNNING, Event.TAKE_OVER): State.RUNNING,
    (State.RUNNING, Event.SUCCEED): State.SUCCEEDED,
    (State.RUNNING, Event.FAIL): State.FAILED,
    (State.RUNNING, Event.CANCEL): State.CANCELLED,
    (State.RUNNING, Event.HAND_BACK): State.QUEUED,
    (State.RUNNING, Event.DEFER): State.QUEUED,
}

FINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
ACTIVE = frozenset(State) - FINAL
# Plain strings in a fixed order, for SQL.
ACTIVE_STATES = tuple(s.value for s in State if s in ACTIVE)
FINAL_STATES = tuple(s.value for s in State if s in FINAL)
# The event that ends a running job in each final state (the worker's finish).
ENDING: Mapping[State, Event] = {State.SUCCEEDED: Event.SUCCEED, State.FAILED: Event.FAIL,
                                 State.CANCELLED: Event.CANCEL}


class IllegalTransition(ValueError):
    """A state change the table does not allow."""

    def __init__(self, current: State | str | None, event: Event) -> None:
        allowed = ", ".join(s.value for s in move(event).sources)
        super().__init__(f"a job cannot {event.value} from {current!s}; only from {allowed}")
        self.current, self.event = current, event


@dataclass(frozen=True)
class Move:
    """One event as the store applies it: the states it may start from, and where it ends."""

    event: Event
    sources: tuple[State, ...]
    target: State

    @property
    def source_values(self) -> tuple[str, ...]:
        return tuple(s.value for s in self.sources)


def next_state(current: State | str, event: Event) -> State:
    """The state ``event`` moves a job in ``current`` to; IllegalTransition if it may not."""
    try:
        return TRANSITIONS[(State(current), event)]
    except (KeyError, ValueError):
        raise IllegalTransition(current, event) from None


def move(event: Event, only: tuple[State, ...] | None = None) -> Move:
    """``event`` as one write: every state it may start from (or those of ``only``, each of
    which the table must allow), and the one it leads to."""
    sources = tuple(s for s in State if (s, event) in TRANSITIONS)
    if only is not None:
        for state in only:
            next_state(state, event)
        sources = tuple(only)
    targets = {TRANSITIONS[(s, event)] for s in sources}
    assert len(targets) == 1, f"{event} must lead to one state"
    return Move(event, sources, targets.pop())


def ending(state: State | str) -> Event:
    """The event that ends a running job in ``state``; IllegalTransition if it is not final."""
    try:
        return ENDING[State(state)]
    except (KeyError, ValueError):
        raise ValueError(f"{state!s} is not a state a job ends in") from None


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
    CI_STOPPED = "ci-stopped"  # the repository's own checks stay red: not tried, or no more
