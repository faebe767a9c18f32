"""Wiring: builds the worker with the runner and reporter the settings call for."""

from __future__ import annotations

from bot.config import Settings
from bot.store import Store
from bot.worker import LogReporter, NotImplementedRunner, Worker


def build_worker(settings: Settings, store: Store) -> Worker:
    """A worker for these settings."""
    return Worker(
        store, NotImplementedRunner(), LogReporter(), concurrency=settings.concurrency,
        lease_seconds=settings.lease_seconds, heartbeat_seconds=settings.heartbeat_seconds,
        poll_seconds=settings.poll_seconds, max_attempts=settings.max_attempts,
    )
