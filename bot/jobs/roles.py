"""What the worker is given: a runner, a reporter and a conversation (Protocols), and the
stand-ins used when no GitHub App is configured."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from bot.jobs.outcome import JobFailed, JobResult
from bot.jobs.states import Failure
from bot.jobs.store import Job

log = logging.getLogger("handoff.worker")


class Runner(Protocol):
    """Does the work of one job."""

    async def run(self, job: Job) -> JobResult: ...


class Conversation(Protocol):
    """Speaks for jobs on GitHub before and around their run (bot.reporter.conversation)."""

    async def announce(self, job: Job, position: int) -> int | None: ...

    async def not_permitted(self, job: Job) -> str: ...

    async def acknowledge_early(self, job: Job) -> bool: ...

    async def answer(self, request: dict[str, Any], job: Job, speak: bool) -> None: ...

    async def may_steer(self, job: Job, login: str) -> bool: ...

    async def refuse_cancel(self, job: Job) -> None: ...

    async def handed_back(self, job: Job) -> None: ...


class Reporter(Protocol):
    """Makes a job's final state visible to people; raises if it could not."""

    async def report(self, job: Job) -> None: ...


class UnconfiguredRunner:
    """The runner without a GitHub App: every job ends, visibly, saying what is missing."""

    async def run(self, job: Job) -> JobResult:
        raise JobFailed(Failure.NOT_CONFIGURED, "no GitHub App is configured, so no agent "
                        "can run: set HANDOFF_APP_ID and HANDOFF_PRIVATE_KEY (`handoff doctor` "
                        "shows what is missing), then relabel the issue")


class LogReporter:
    """Reports final states to the log only (used when no GitHub App is configured)."""

    async def report(self, job: Job) -> None:
        log.warning("job %s %s#%s ended %s: %s", job.id, job.repo, job.issue_number, job.state,
                    job.reason or "ok")
