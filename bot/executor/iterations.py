"""The iterations of one agent pull request: each job's summary, spend and evidence, carried
from job to job (``context["origin_job"]``) so the PR body accumulates instead of being
rewritten from the latest iteration alone."""

from __future__ import annotations

from typing import Any

from bot.jobs.record import Iteration, JobRecord, Spent
from bot.jobs.store import Job, Jobs
from bot.jobs.testreport import TestReport

MAX_CHAIN = 100


async def earlier(jobs: Jobs, job: Job) -> tuple[list[Iteration], TestReport | None]:
    """The iterations delivered before ``job`` on its PR, oldest first, and the test report of
    the first one's base commit (None if unknown)."""
    found: list[Iteration] = []
    origin_id = int(job.context.get("origin_job", 0) or 0)
    for _ in range(MAX_CHAIN):
        origin = await jobs.get_job(origin_id) if origin_id else None
        if origin is None:
            break
        record = origin.result
        if record.iterations:  # it carried everything before it
            return list(record.iterations) + found, record.tests.base_report
        if record.delivery.pr_url and record.summary:  # recorded before iterations were
            found.insert(0, entry(origin, record))
        origin_id = int(origin.context.get("origin_job", 0) or 0)
    return found, None


def entry(job: Job, record: JobRecord, evidence: bool = False) -> Iteration:
    """One iteration as the PR body shows it."""
    verdict = record.verdict
    shown = [*verdict.fixed, *verdict.added][:500] if verdict else []
    return Iteration(job_id=job.id, kind=job.kind, requested_by=job.requested_by,
                     feedback=job.feedback[:2000], summary=record.summary,
                     spend=record.agent.spend.model_copy(), template=record.inputs.template,
                     tests_after=record.tests.after,
                     evidence=evidence, shown=shown,
                     ci=record.ci.shown() if record.ci else None)


def total_spend(iterations: list[Iteration]) -> dict[str, Any]:
    """Steps, tokens, dollars and wall time summed over the iterations."""
    total = Spent()
    for it in iterations:
        for key in Spent.model_fields:
            setattr(total, key, getattr(total, key) + getattr(it.spend, key))
    total.cost_usd = round(total.cost_usd, 6)
    total.wall_seconds = round(total.wall_seconds, 2)
    return total.model_dump()
