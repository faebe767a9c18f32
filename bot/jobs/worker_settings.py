"""The worker's numbers, given once at construction (bot/wiring.py maps them from Settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker claims, holds, reports and stops jobs."""

    concurrency: int = 2
    """Jobs run at once."""
    lease_seconds: float = 60
    """How long a claim holds without a heartbeat; another worker takes the job after."""
    heartbeat_seconds: float = 15
    """How often a running job's lease is renewed."""
    poll_seconds: float = 1
    """How often the queue is looked at when nothing wakes the worker."""
    max_attempts: int = 3
    """Claims of one job (its worker died each time) before it fails as worker-lost."""
    max_deferrals: int = 5
    """Times a job goes back to the queue (GitHub's rate limit, GitHub away) before it fails."""
    disk_full_wait: float = 30.0
    """How long a job whose disk was full waits before it is tried again (no attempt spent)."""
    loop_backoff_max: float = 30.0
    """The longest wait of the claim loop after rounds that failed (the database away)."""
    report_retry_seconds: float = 30.0
    """The first back-off of a report that did not get through; it doubles."""
    report_retry_max: float = 3600.0
    """The longest back-off of a report."""
    max_report_attempts: int = 12
    """Tries of a report (about half a day with the back-off) before it is unreportable."""
    report_hold_seconds: float = 120.0
    """How long a report being posted is held from other workers."""
    reports_per_round: int = 10
    """Pending reports posted per round of the loop, so claims are not held up."""
    shutdown_grace: float = 0.0
    """On SIGTERM: how long running jobs may go on to finish."""
    stop_seconds: float = 20.0
    """Then: how long the rest get to hand themselves back to the queue."""
