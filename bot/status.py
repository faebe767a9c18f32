"""The status comment the harness (never the model) keeps current on the issue."""

from __future__ import annotations

import time

from bot.agent.budget import Spend
from bot.github import RepoClient

MAX_BODY = 60_000  # GitHub refuses comments over 65,536 characters
MARKER = "<!-- handoff:status -->"

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
}


class StatusComment:
    """One comment, edited as the job moves; edits are coalesced to one per ``interval``."""

    def __init__(self, gh: RepoClient, number: int, job_id: int, interval: float = 5.0,
                 comment_id: int | None = None) -> None:
        self.gh, self.number, self.job_id = gh, number, job_id
        self.interval, self.comment_id = interval, comment_id
        self.last_sent = 0.0
        self.body = ""
        self.dirty = False

    def text(self, stage: str, detail: str = "") -> str:
        line = f"**Handoff** · job {self.job_id} · {STAGES.get(stage, stage)}"
        body = f"{MARKER}\n{line}\n\n{detail}".strip() + "\n"
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
            self.comment_id = int((await self.gh.create_comment(self.number, self.body))["id"])
        else:
            await self.gh.update_comment(self.comment_id, self.body)
        self.last_sent, self.dirty = time.monotonic(), False

    async def agent_progress(self, spend: Spend) -> None:
        await self.set("agent", f"Step {spend.steps} · {spend.wall_seconds:.0f}s elapsed · "
                                f"{spend.tokens:,} tokens · ${spend.cost_usd:.4f} so far")
