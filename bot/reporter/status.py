"""The status comment the harness (never the model) keeps current on the issue."""

from __future__ import annotations

import asyncio
import time

from bot.github.client import RepoClient
from bot.github.naming import looks_like_bot
from bot.jobs.spend import Spend

ANNOUNCED_LOOKUPS = 5  # tries, a second apart
MAX_BODY = 60_000  # GitHub refuses comments over 65,536 characters
MARKER = "<!-- handoff:status"  # what every status comment starts with


def marker(job_id: int) -> str:
    """Hidden in a job's status comment, so any worker finds the one comment to edit."""
    return f"{MARKER} job={job_id} -->"

STAGES = {
    "queued": "⏳ Queued",
    "preparing": "🔧 Preparing the workspace",
    "setup": "📦 Installing the dependencies",
    "baseline": "🧪 Running the tests on the base commit",
    "agent": "🤖 Agent working",
    "testing": "🧪 Running the tests on the change",
    "pushing": "⬆️ Pushing the branch and opening the pull request",
    "done": "✅ Done",
    "done-regressed": "⚠️ PR opened with regressions",
    "done-untested": "⚠️ PR opened; tests not run",
    "done-unproven": "⚠️ PR opened; nothing shows the issue's behaviour changed",
    "failed": "❌ Failed",
    "cancelled": "🛑 Cancelled",
    "paused": "⏸️ Paused, will resume",
    "rate-limited": "⏳ Waiting for GitHub's rate limit",
    "waiting-for-checks": "⏳ Waiting for the pull request's checks to finish",
    "github-away": "⏳ Waiting for GitHub to answer",
}


def job_url(public_url: str, job_id: int) -> str:
    """The job's dashboard page when a public URL is configured, else ""."""
    return f"{public_url.rstrip('/')}/jobs/{job_id}" if public_url else ""


class StatusComment:
    """One comment, edited as the job moves; edits are coalesced to one per ``interval``."""

    def __init__(self, gh: RepoClient, number: int, job_id: int, interval: float = 5.0,
                 comment_id: int | None = None, link: str = "", announced: bool = False
                 ) -> None:
        self.gh, self.number, self.job_id, self.link = gh, number, job_id, link
        self.interval, self.comment_id = interval, comment_id
        # Another worker claimed the right to announce this job's queue place: its comment
        # may be on its way, so it is looked for a little longer before one is posted.
        self.lookups = ANNOUNCED_LOOKUPS if announced and comment_id is None else 1
        self.last_sent = 0.0
        self.body = ""
        self.dirty = False

    def text(self, stage: str, detail: str = "") -> str:
        job = f"[job {self.job_id}]({self.link})" if self.link else f"job {self.job_id}"
        line = f"**Handoff** · {job} · {STAGES.get(stage, stage)}"
        body = f"{marker(self.job_id)}\n{line}\n\n{detail}".strip() + "\n"
        return body if len(body) <= MAX_BODY else body[:MAX_BODY] + "\n…(cut)\n"

    async def set(self, stage: str, detail: str = "", force: bool = False) -> None:
        """Show a stage; within ``interval`` of the last edit only the latest is kept."""
        self.body, self.dirty = self.text(stage, detail), True
        if force or time.monotonic() - self.last_sent >= self.interval:
            await self.flush()

    async def flush(self) -> None:
        if not self.dirty:
            return
        if self.comment_id is None:
            self.comment_id = await self._posted_before()
        if self.comment_id is None:
            self.comment_id = int((await self.gh.create_comment(self.number, self.body))["id"])
        else:
            await self.gh.update_comment(self.comment_id, self.body)
        self.last_sent, self.dirty = time.monotonic(), False

    async def _posted_before(self) -> int | None:
        """The job's status comment if a worker posted it already (one that announced the
        job's queue place while another claimed it, or one that died before saving its id)."""
        hidden = marker(self.job_id)
        for attempt in range(self.lookups):
            if attempt:
                await asyncio.sleep(1.0)
            for comment in await self.gh.list_comments(self.number):
                if hidden in str(comment.get("body") or "") and \
                        looks_like_bot(comment.get("user")):
                    return int(comment["id"])
        return None

    async def agent_progress(self, spend: Spend) -> None:
        await self.set("agent", f"Step {spend.steps} · {spend.wall_seconds:.0f}s elapsed · "
                                f"{spend.tokens:,} tokens · ${spend.cost_usd:.4f} so far")
