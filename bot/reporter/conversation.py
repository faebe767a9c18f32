"""The short exchanges around a job: acknowledging it, its place in the queue, answering a
second trigger or a /cancel, who may ask, and saying a paused job will resume."""

from __future__ import annotations

from typing import Any

from bot.github.client import WRITE_ROLES, GitHubApp, RepoClient
from bot.jobs.record import JobRecord
from bot.jobs.store import Job
from bot.reporter import wording
from bot.reporter.status import STAGES, StatusComment, job_url


class Conversation:
    """Speaks for jobs on GitHub; every method talks to GitHub and never to the store."""

    def __init__(self, github: GitHubApp, public_url: str = "", status_interval: float = 5.0
                 ) -> None:
        self.github, self.public_url, self.status_interval = github, public_url, status_interval

    def repo(self, job: Job) -> RepoClient | None:
        return self.github.repo(job.installation_id, job.repo) if job.installation_id else None

    async def acknowledge(self, gh: RepoClient, job: Job, record: JobRecord) -> StatusComment:
        """React to what asked for the job (unless ``record`` says it was done), and give
        the job its status comment."""
        if not record.acknowledged:
            await self.react(gh, job)
        return StatusComment(gh, job.target, job.id, self.status_interval,
                             record.status_comment_id, job_url(self.public_url, job.id),
                             announced=record.announced)

    @staticmethod
    async def react(gh: RepoClient, job: Job) -> None:
        """👀 on what asked for the job: the comment, the review comment, or the issue
        (a review itself takes no reactions on GitHub)."""
        context = job.context
        if comment_id := context.get("comment_id"):
            await gh.react_comment(int(comment_id))
        elif review_comment_id := context.get("review_comment_id"):
            await gh.react_review_comment(int(review_comment_id))
        elif job.kind == "implement":
            await gh.react_issue(job.issue_number)

    async def acknowledge_early(self, job: Job) -> bool:
        """👀 on a queued job's request once its requester may ask; True when done."""
        gh = self.repo(job)
        if gh is None:
            return False
        await self.react(gh, job)
        return True

    async def announce(self, job: Job, position: int) -> int | None:
        """A job waits behind others: react and say where it stands (for people with write
        access only; the polite refusal comes when the job runs). Returns the status
        comment's id, or None if nothing was said."""
        gh = self.repo(job)
        if gh is None or await gh.permission(job.requested_by) not in WRITE_ROLES:
            return None
        record = job.result.model_copy()
        status = await self.acknowledge(gh, job, record)
        await status.set("queued", wording.QUEUED.format(position=position), force=True)
        return status.comment_id

    async def answer(self, request: dict[str, Any], job: Job, speak: bool) -> None:
        """A trigger or command that reached a job under way: a reaction, and, when
        ``speak``, a line saying which job has it (a /cancel is answered by its result)."""
        gh = self.repo(job)
        if gh is None:
            return
        if request["comment_id"]:
            await gh.react_comment(int(request["comment_id"]))
        if speak and request["kind"] == "trigger":
            await gh.create_comment(int(request["number"]), wording.ALREADY_UNDER_WAY.format(
                login=request["requested_by"], job=job.id, state=job.state))

    async def may_steer(self, job: Job, login: str) -> bool:
        """Whether ``login`` has write access to the job's repository (may start, stop or
        steer it)."""
        gh = self.repo(job)
        return gh is not None and await gh.permission(login) in WRITE_ROLES

    async def refuse_cancel(self, job: Job) -> None:
        """Tell the author of a refused cancel (a /cancel, or closing the issue) that the job
        goes on."""
        gh = self.repo(job)
        if gh is None or not job.cancel_by:
            return
        role = await gh.permission(job.cancel_by)
        text = wording.CLOSE_REFUSED if (job.cancel_reason or "").startswith(
            "the issue was closed") else wording.CANCEL_REFUSED
        await gh.create_comment(job.target, text.format(login=job.cancel_by, role=role,
                                                        repo=job.repo))

    async def not_permitted(self, job: Job, gh: RepoClient | None = None) -> str:
        """Why the person who asked for this job may not (no write access), or ""; through
        ``gh`` when a run has one (it remembers the roles it asked for)."""
        gh = gh or self.repo(job)
        if gh is None:
            return ""  # the run says what is wrong with the delivery
        role = await gh.permission(job.requested_by)
        if role in WRITE_ROLES:
            return ""
        return wording.NOT_PERMITTED.format(login=job.requested_by, role=role, repo=job.repo)

    async def handed_back(self, job: Job) -> None:
        """The worker stopped (a restart, a deploy) and handed the job back: say so."""
        gh = self.repo(job)
        if gh is None or not job.result.status_comment_id:
            return
        status = StatusComment(gh, job.target, job.id, 0, job.result.status_comment_id,
                               job_url(self.public_url, job.id))
        await status.set("paused", wording.PAUSED, force=True)

    @staticmethod
    def resumed(stage: str) -> str:
        return wording.RESUMED.format(stage=STAGES.get(stage, stage or "queued"))
