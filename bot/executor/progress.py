"""Handoff's check run from the moment a job starts on a pull request's head: opened (or found
again after a restart) by ``open_check``, shown step by step through ``Run.stage``, completed
by the delivery, the failure report or a clean ``/rebase``."""

from __future__ import annotations

from bot.executor.run import Run
from bot.executor.steps import Prepared
from bot.reporter.checks import close_open_check, progress_check


async def open_check(run: Run, p: Prepared, public_url: str) -> None:
    """Open the job's in-progress check run on the PR's head and record its id."""
    d = run.record.delivery
    run.check = await progress_check(run.gh, run.job, p.start_sha,
                                     d.check_run_id if d.check_run_open else None, public_url)
    if run.check is not None and not d.check_run_open:
        d.check_run_id, d.check_run_open = run.check.id, True
        await run.save()


async def close_check(run: Run, conclusion: str, title: str, summary: str) -> None:
    """Complete the job's open check run (a job that ends without a verdict of its own)."""
    if await close_open_check(run.gh, run.record, conclusion, title, summary):
        run.record.delivery.check_run_open = False
