"""The iterations of one agent pull request: each job's summary, spend and evidence, carried
from job to job (``context["origin_job"]``) so the PR body accumulates instead of being
rewritten from the latest iteration alone."""

from __future__ import annotations

from typing import Any

from bot.jobs.record import JobRecord
from bot.jobs.store import Job, Store

MAX_CHAIN = 100
SPEND_KEYS = ("steps", "input_tokens", "cached_tokens", "output_tokens", "cost_usd",
              "wall_seconds")


async def earlier(store: Store, job: Job) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The iterations delivered before ``job`` on its PR, oldest first, and the test report of
    the first one's base commit (``{}`` if unknown)."""
    found: list[dict[str, Any]] = []
    origin_id = int(job.context.get("origin_job", 0) or 0)
    for _ in range(MAX_CHAIN):
        origin = await store.get_job(origin_id) if origin_id else None
        if origin is None:
            break
        record = origin.result
        if record.iterations:  # it carried everything before it
            return list(record.iterations) + found, dict(record.baseline_report)
        if record.pr_url and record.summary:  # recorded before iterations were
            found.insert(0, entry(origin, record))
        origin_id = int(origin.context.get("origin_job", 0) or 0)
    return found, {}


def entry(job: Job, record: JobRecord, evidence: bool = False) -> dict[str, Any]:
    """One iteration as the PR body shows it."""
    return {"job_id": job.id, "kind": job.kind, "requested_by": job.requested_by,
            "feedback": job.feedback[:2000], "summary": record.summary,
            "spend": dict(record.spend), "template": record.template,
            "tests_after": record.tests_after, "evidence": evidence,
            "shown": [*record.verdict.get("fixed", []), *record.verdict.get("added", [])][:500]}


def total_spend(iterations: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps, tokens, dollars and wall time summed over the iterations."""
    total: dict[str, Any] = {key: 0 for key in SPEND_KEYS}
    for it in iterations:
        for key in SPEND_KEYS:
            total[key] += (it.get("spend") or {}).get(key, 0) or 0
    total["cost_usd"] = round(float(total["cost_usd"]), 6)
    total["wall_seconds"] = round(float(total["wall_seconds"]), 2)
    return total
