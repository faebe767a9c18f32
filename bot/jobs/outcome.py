"""How a job's run ends, as the runner tells the worker: a result, or one of three exceptions."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.jobs.record import JobRecord


class JobFailed(Exception):
    """A job cannot finish; ``category`` is what the check run and the comment name."""

    def __init__(self, category: str, reason: str, result: JobRecord | None = None) -> None:
        super().__init__(reason)
        self.category = category
        self.reason = reason
        self.result = result


WAITING_FOR_CHECKS = "waiting-for-checks"  # a CI fix's stage while the commit's checks run


class JobDeferred(Exception):
    """The job cannot go on before ``until`` (GitHub's rate limit, GitHub away, checks still
    running); it goes back in the queue, shown at ``stage``. A deferral that ``counts`` is
    one of the few a job may have; one bounded by its own deadline does not."""

    def __init__(self, until: float, reason: str, result: JobRecord | None = None,
                 stage: str = "rate-limited", counts: bool = True) -> None:
        super().__init__(reason)
        self.until, self.reason, self.result, self.stage = until, reason, result, stage
        self.counts = counts


class Unreportable(Exception):
    """A job's end can never be posted (no installation, the App lost access, the repository
    is archived or gone): it is marked so instead of being retried."""


@dataclass
class JobResult:
    """What a successful job produced."""

    summary: str
    result: JobRecord = field(default_factory=JobRecord)
