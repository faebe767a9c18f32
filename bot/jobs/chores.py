"""The conversation chores of a worker, between runs: checking who asked for each new job,
carrying out or refusing cancels, answering triggers that reached a running job, announcing
queue positions, and saying that a handed-back job will resume."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from githubkit.exception import GitHubException

from bot import logs
from bot.github.client import GitHubApiError
from bot.github.retry import WaitTooLong
from bot.jobs.roles import Conversation
from bot.jobs.store import STORE_ERRORS, Job, Store

log = logging.getLogger("handoff.worker")
# What a courtesy on GitHub raises when GitHub is away or refuses: logged, and the chore is
# done again next round or dropped (the job itself still runs and reports).
GITHUB_AWAY: tuple[type[BaseException], ...] = (
    GitHubApiError, WaitTooLong, GitHubException, httpx.HTTPError, *STORE_ERRORS)


class Chores:
    """Speaks for queued and running jobs on GitHub, through ``conversation`` (None: there
    is no GitHub App, and the chores that speak are skipped)."""

    def __init__(self, store: Store, conversation: Conversation | None) -> None:
        self.store, self.conversation = store, conversation

    async def round(self) -> None:
        """The chores that come before claims."""
        await self.review_arrivals()
        await self.review_cancels()
        await self.answer_requests()

    async def review_arrivals(self) -> None:
        """Check who asked for each newly queued job as it arrives, so a person without
        write access hears so at once instead of when the job's turn comes."""
        if self.conversation is None:
            return
        for job in await self.store.queued():
            if job.result.requester_checked or (job.not_before or 0) > time.time():
                continue
            with logs.bound(job=job.id, repo=job.repo):
                await self._review_arrival(job)

    async def _review_arrival(self, job: Job) -> None:
        assert self.conversation is not None
        try:
            why = await self.conversation.not_permitted(job)
        except GITHUB_AWAY as exc:  # checked next round, and again when it runs
            if (until := getattr(exc, "retry_at", None)) is not None:  # a long rate limit
                await self.store.update_queued(job.id, stage="rate-limited",
                                               not_before=until, reason=str(exc),
                                               deferrals=job.deferrals + 1)
                log.warning("job %s waits for GitHub's rate limit: %s", job.id, exc)
                return
            log.exception("job %s: could not check who asked for it", job.id)
            return
        if why:
            await self.store.refuse(job.id, why)
        else:
            seen = job.result.acknowledged or await self._acknowledge(job)
            await self.store.update_queued(
                job.id, result=job.result.with_(requester_checked=True, acknowledged=seen))

    async def _acknowledge(self, job: Job) -> bool:
        """👀 on what asked for a job, as soon as its requester may ask (before it runs);
        False if GitHub did not take it (the job reacts when it starts)."""
        assert self.conversation is not None
        try:
            return await self.conversation.acknowledge_early(job)
        except GITHUB_AWAY:  # a courtesy: the job itself still runs and reports
            log.exception("job %s: could not react to its request", job.id)
            return False

    async def review_cancels(self) -> None:
        """Carry out each cancel (a /cancel, or closing the issue while a job runs) whose
        author has write access; refuse the others, saying so once a person a job. Without a
        conversation that can check, none is carried out."""
        for job in await self.store.cancel_requests():
            with logs.bound(job=job.id, repo=job.repo):
                await self._review_cancel(job)

    async def _review_cancel(self, job: Job) -> None:
        try:
            allowed = bool(self.conversation and job.cancel_by and
                           await self.conversation.may_steer(job, job.cancel_by))
        except GITHUB_AWAY:  # the request stays and is checked next round
            log.exception("job %s: could not check who asked to cancel it", job.id)
            return
        if not allowed:
            log.warning("job %s: cancel by @%s refused: no write access", job.id,
                        job.cancel_by)
            await self._refuse_cancel(job)
        await self.store.settle_cancel(job, allowed)

    async def _refuse_cancel(self, job: Job) -> None:
        if self.conversation is None or not job.cancel_by or \
                not await self.store.claim_reply(f"job:{job.id}", job.cancel_by):
            return
        try:
            await self.conversation.refuse_cancel(job)
        except GITHUB_AWAY:  # a courtesy: the refused cancel is dropped either way
            log.exception("job %s: could not tell @%s their cancel was refused", job.id,
                          job.cancel_by)

    async def answer_requests(self) -> None:
        """Answer the triggers and commands that reached a job under way: a reaction for
        people with write access, and a line for a second trigger, once a person a job.
        Others get no answer here (an outsider commenting again and again gets no replies;
        a refused /cancel hears once, from ``review_cancels``)."""
        if self.conversation is None:
            return
        for request in await self.store.unanswered_requests():
            if not await self.store.claim_request(int(request["id"])):
                continue  # another worker answers it
            with logs.bound(job=int(request["job_id"]), repo=request["repo"]):
                await self._answer(request)

    async def _answer(self, request: dict[str, Any]) -> None:
        assert self.conversation is not None
        login = str(request["requested_by"])
        try:
            job = await self.store.get_job(int(request["job_id"]))
            if job is None or not await self.conversation.may_steer(job, login):
                return
            speak = request["kind"] == "trigger" and \
                await self.store.claim_reply(f"job:{job.id}", login)
            await self.conversation.answer(request, job, speak)
        except GITHUB_AWAY:  # a courtesy: the job itself still reports
            log.exception("job %s: could not answer @%s's %s", request["job_id"],
                          request["requested_by"], request["kind"])

    async def announce_queued(self) -> None:
        """Tell people whose jobs wait behind others where they stand in the queue."""
        if self.conversation is None:
            return
        now = time.time()
        # Jobs parked until a time (a rate limit, checks still running) wait for that, not
        # for a worker: they have no place in the line.
        waiting = [j for j in await self.store.queued() if not (j.not_before or 0) > now]
        for position, job in enumerate(waiting, start=1):
            if job.result.announced and job.result.position == position:
                continue  # said already, and its place has not changed
            if job.result.announced and job.stage not in ("", "queued", "rate-limited"):
                continue  # handed back mid-job: its status says it will resume; keep that
            if job.result.announced and job.result.status_comment_id is None:
                # Another worker is posting its first status comment (or said nothing, or
                # failed): a second announcement now would post a second comment.
                continue
            with logs.bound(job=job.id, repo=job.repo):
                await self._announce(job, position)

    async def _announce(self, job: Job, position: int) -> None:
        assert self.conversation is not None
        # Claimed first: one worker announces, and a failing announcement is not retried on
        # every loop.
        claimed = job.result.with_(announced=True, position=position)
        if not await self.store.update_queued(job.id, unchanged_since=job.updated_at,
                                              result=claimed):
            return
        try:
            comment_id = await self.conversation.announce(job, position)
        except GITHUB_AWAY:  # a courtesy; the job still runs and reports
            log.exception("job %s: could not announce its queue position", job.id)
            return
        if comment_id is not None:
            await self.store.update_queued(job.id, result=claimed.with_(
                acknowledged=True, status_comment_id=comment_id))

    async def handed_back(self, job: Job) -> None:
        """Say on GitHub that a job handed back to the queue will resume."""
        if self.conversation is None:
            return
        try:
            await self.conversation.handed_back(job)
        except GITHUB_AWAY:  # a courtesy: the job resumes either way
            log.exception("job %s: could not say on GitHub that it will resume", job.id)
