"""Wiring: builds the worker with the runner and reporter the settings call for."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from bot import logs
from bot.config import Settings
from bot.executor.sandbox.base import Backend
from bot.jobs.housekeeping import Task
from bot.jobs.roles import Conversation, LogReporter, Reporter, Runner, UnconfiguredRunner
from bot.jobs.states import State
from bot.jobs.store import Store
from bot.jobs.worker import Worker
from bot.jobs.worker_settings import WorkerSettings
from bot.receiver import ingest

log = logging.getLogger("handoff")
REDELIVERY_EVERY = 6 * 3600.0  # as GitHub's own sample script does
PRUNE_EVERY = 3600.0


def reaper(backend: Backend, store: Store) -> Callable[[], Awaitable[list[str]]]:
    """Periodic removal of sandboxes whose job's lease is not held by the worker that
    started them (that worker died, wherever it ran)."""

    async def held(job_id: str, owner: str) -> bool:
        number = job_id.partition("-")[0]  # "12" or "12-baseline": job 12's sandboxes
        job = await store.get_job(int(number)) if number.isdigit() else None
        return job is not None and job.state == State.RUNNING and job.lease_owner == owner and \
            (job.lease_expires_at or 0) > time.time()

    async def reap_sandboxes() -> list[str]:
        removed = await backend.cleanup_orphans(held)
        if removed:
            log.info("removed %d orphaned sandboxes: %s", len(removed), ", ".join(removed))
        return removed

    return reap_sandboxes


def worker_settings(settings: Settings) -> WorkerSettings:
    """The worker's numbers that ``Settings`` names (the rest keep their defaults)."""
    return WorkerSettings(
        concurrency=settings.concurrency, lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds, poll_seconds=settings.poll_seconds,
        max_attempts=settings.max_attempts, report_retry_seconds=settings.report_retry_seconds,
        shutdown_grace=settings.shutdown_grace, stop_seconds=settings.stop_seconds)


def build_worker(settings: Settings, store: Store, housekeeping: bool = True) -> Worker:
    """A worker for these settings: the job runner when a GitHub App is configured.
    ``housekeeping=False`` leaves out the periodic tasks (the dev kit's stack: a redelivery
    sweep would spend the simulator's faults)."""
    logs.add_secrets(*settings.secret_values())
    runner: Runner = UnconfiguredRunner()
    reporter: Reporter = LogReporter()
    cleanup = close = None
    conversation: Conversation | None = None
    periodic: list[tuple[float, Task]] = []
    pem = settings.private_key_pem()
    if settings.app_id and pem:
        from bot.executor.runner import JobRunner
        from bot.executor.sandbox import make_backend
        from bot.github.client import GitHubApp, Pacer
        from bot.receiver.redelivery import sweep
        from bot.reporter.conversation import Conversation as GitHubConversation
        from bot.reporter.report import GitHubReporter

        github = GitHubApp(settings.app_id, pem, settings.github_url,
                           timeout=settings.github_timeout,
                           pacer=Pacer(settings.github_write_interval))
        backend = make_backend(settings)
        conversation = GitHubConversation(github, settings.public_url,
                                          settings.status_interval)
        runner = JobRunner(settings, store, github, backend, conversation)
        reporter = GitHubReporter(github, settings.public_url)
        cleanup = backend.cleanup_orphans

        async def close() -> None:  # what the worker holds: GitHub's and the sandboxes' clients
            try:
                await github.close()
            finally:
                await backend.close()
        periodic.append((settings.reap_seconds, reaper(backend, store)))

        async def redelivery_sweep() -> list[str]:
            return await sweep(github, store)

        periodic.append((REDELIVERY_EVERY, redelivery_sweep))
    else:
        log.warning("no GitHub App configured (HANDOFF_APP_ID, HANDOFF_PRIVATE_KEY): jobs are "
                    "recorded and end saying so")
    if settings.delivery_retention_days > 0:

        async def prune_deliveries() -> int:
            removed = await store.prune_deliveries(settings.delivery_retention_days)
            if removed:
                log.info("forgot %d deliveries older than %g days", removed,
                         settings.delivery_retention_days)
            return removed

        periodic.append((PRUNE_EVERY, prune_deliveries))
    return Worker(store, runner, reporter, worker_settings(settings), on_start=cleanup,
                  on_stop=close, periodic=periodic if housekeeping else (),
                  conversation=conversation,
                  after_end=lambda job_id: store.write(
                      lambda conn: ingest.follow_up(store, conn, job_id)))
