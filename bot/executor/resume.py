"""Where a handed-back or taken-over job's agent goes on from: after every step the agent's
conversation and its work tree (as a diff from the commit the job started on) are saved with
the job (``JobRecord.agent.checkpoint``), so the next attempt, on any worker, restores both and
asks the model only for the steps that were not saved."""

from __future__ import annotations

import logging
from typing import Any

from bot.executor.gitops import NO_DRIVERS, Checkout, GitError
from bot.executor.run import Run
from bot.jobs.record import Checkpoint
from bot.jobs.spend import Spend
from bot.jobs.store import is_full

log = logging.getLogger("handoff.executor")
MAX_DIFF_CHARS = 8 << 20  # a larger work tree change is not saved: the previous step stays


async def save(run: Run, co: Checkout, start_sha: str, messages: list[dict[str, Any]],
               spend: Spend) -> None:
    """Save the agent's conversation and work tree as of the step that just ended; on a full
    disk the previous step's stays (the agent goes on)."""
    try:
        await _save(run, co, start_sha, messages, spend)
    except Exception as exc:
        if not is_full(exc):
            raise
        log.warning("job %s: step %d not saved, the disk is full (%s)", run.job.id,
                    spend.steps, exc)


async def _save(run: Run, co: Checkout, start_sha: str, messages: list[dict[str, Any]],
                spend: Spend) -> None:
    await co.git("add", "-A")
    diff = await co.git("diff", "--cached", "--binary", "--no-renames", *NO_DRIVERS,
                        start_sha)
    if len(diff) > MAX_DIFF_CHARS:
        log.warning("job %s: the change after step %d is %d characters, too large to save; a "
                    "resumed job goes on from an earlier step", run.job.id, spend.steps,
                    len(diff))
        return
    run.record.agent.checkpoint = Checkpoint(start_sha=start_sha, step=spend.steps,
                                             spend=spend.stored(), messages=messages,
                                             diff=diff)
    await run.save()


async def restore(run: Run, co: Checkout, start_sha: str) -> Checkpoint | None:
    """The checkpoint an earlier attempt saved, with its work tree restored; None when there
    is none, or the branch moved since (the agent then starts over)."""
    saved = run.record.agent.checkpoint
    if not saved:
        return None
    run.record.agent.checkpoint = None
    if saved.start_sha != start_sha:
        log.warning("job %s: its branch moved since step %s was saved; the agent starts over",
                    run.job.id, saved.step)
        return None
    if saved.diff:
        patch = co.git_dir / "handoff-resume.patch"  # the trusted side: no sandbox sees it
        patch.write_text(saved.diff)
        try:
            await co.git("apply", "--cached", "--binary", str(patch))
            tree = (await co.git("write-tree")).strip()
            await co.git("read-tree", "--reset", "HEAD")
            await co.git("update-index", "-q", "--refresh")
            await co.git("read-tree", "-m", "-u", "HEAD", tree)  # the work tree as it was
        except GitError as exc:
            log.warning("job %s: could not restore the work tree of step %s (%s); the agent "
                        "starts over", run.job.id, saved.step, exc)
            await co.git("read-tree", "--reset", "-u", "HEAD")
            return None
        finally:
            patch.unlink(missing_ok=True)
    log.info("job %s: the agent goes on from its step %s", run.job.id, saved.step)
    run.record.agent.checkpoint = saved
    return saved
