"""The iterations of one agent pull request: each job's summary, spend and evidence, carried
from job to job (``context["origin_job"]``) so the PR body accumulates instead of being
rewritten from the latest iteration alone."""

from __future__ import annotations

from typing import Any

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
        result = origin.result
        if "iterations" in result:  # it carried everything before it
            return list(result["iterations"]) + found, dict(result.get("baseline_report") or {})
        if result.get("pr_url") and result.get("summary"):  # recorded before iterations were
            found.insert(0, entry(origin, result))
        origin_id = int(origin.context.get("origin_job", 0) or 0)
    return found, {}


def entry(job: Job, result: dict[str, Any], evidence: bool = False) -> dict[str, Any]:
    """One iteration as the PR body shows it."""
    return {"job_id": job.id, "kind": job.kind, "requested_by": job.requested_by,
            "feedback": job.feedback[:2000], "summary": str(result.get("summary", "")),
            "spend": dict(result.get("spend") or {}), "template": result.get("template", ""),
            "tests_after": result.get("tests_after", ""), "evidence": evidence}


def total_spend(iterations: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps, tokens, dollars and wall time summed over the iterations."""
    total: dict[str, Any] = {key: 0 for key in SPEND_KEYS}
    for it in iterations:
        for key in SPEND_KEYS:
            total[key] += (it.get("spend") or {}).get(key, 0) or 0
    total["cost_usd"] = round(float(total["cost_usd"]), 6)
    total["wall_seconds"] = round(float(total["wall_seconds"]), 2)
    return total
