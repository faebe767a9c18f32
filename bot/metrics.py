"""Prometheus metrics: what ``GET /metrics`` shows (prometheus-client's text format).

Counters and histograms are per process (a worker's own figures: `handoff worker` serves them
on ``METRICS_PORT``), except under `handoff serve`, whose worker child writes them where the
receiver's ``/metrics`` adds them up (prometheus-client's multiprocess mode, in a folder on
a memory file system: ``bot.workerprocess.share_metrics``). Job counts by state and the queue
depth are read from the database at each scrape, so every process shows the whole
deployment's.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import generate_latest as _generate
from starlette.types import Scope

from bot import logs

log = logging.getLogger("handoff.web")
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created doubles the scrape

DELIVERIES = Counter("handoff_deliveries", "Webhook deliveries by event and outcome "
                     "(accepted, duplicate, ignored, ... or the refusal).", ["event", "outcome"])
WEBHOOK_SECONDS = Histogram(
    "handoff_webhook_seconds", "Time from a delivery's arrival to its answer.",
    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
JOBS = Gauge("handoff_jobs", "Jobs in the database by state and failure category.",
             ["state", "category"], multiprocess_mode="mostrecent")
LOOP_LAG = Histogram(
    "handoff_event_loop_lag_seconds", "How late the event loop's heartbeat ran (a blocked loop "
    "holds every webhook up).", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
QUEUE_DEPTH = Gauge("handoff_queue_depth", "Jobs queued and not yet claimed.",
                    multiprocess_mode="mostrecent")
STAGE_SECONDS = Histogram(
    "handoff_job_stage_seconds", "How long each stage of a job took.", ["stage"],
    buckets=(.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
ENVIRONMENTS = Counter("handoff_environment_starts", "Sandboxes set up, by whether they "
                       "started from a kept environment (warm) or ran the setup (cold).",
                       ["state"])
TOKENS = Counter("handoff_model_tokens", "Model tokens spent by the built-in agent.",
                 ["direction"])
DOLLARS = Counter("handoff_model_cost_dollars", "Dollars the model calls cost (from PRICES).")
GITHUB_CALLS = Counter("handoff_github_api_calls", "GitHub API calls by method and status "
                       "(each try; 'error' when no answer came).", ["method", "status"])
RATE_REMAINING = Gauge("handoff_github_rate_limit_remaining", "x-ratelimit-remaining of the "
                       "latest GitHub answer, by rate-limit resource.", ["resource"],
                       multiprocess_mode="mostrecent")
REPORTS = Gauge("handoff_job_reports", "Ended jobs by whether their result is on GitHub: "
                "reported, pending (a retry is due) or unreportable (it never can be).",
                ["state"], multiprocess_mode="mostrecent")
BUDGET_SPENT = Gauge("handoff_budget_spent_dollars", "Dollars spent this month under each "
                     "monthly budget.", ["scope", "name"], multiprocess_mode="mostrecent")
BUDGET_CAP = Gauge("handoff_budget_cap_dollars", "Each monthly budget's dollar cap.",
                   ["scope", "name"], multiprocess_mode="mostrecent")
SANDBOXES = Gauge("handoff_sandboxes_running", "Sandboxes running, by backend.", ["backend"],
                  multiprocess_mode="livesum")

_refused = logs.Throttle(60.0)
# A refusal happens before the signature is known good: the event header is not trusted.
_REFUSALS = {400: "bad-request", 401: "bad-signature", 413: "too-large", 415: "not-json"}


def webhook_answered(scope: Scope, status: int, answer: dict[str, Any], started: float) -> None:
    """Count one delivery (cheap: the webhook path's only bookkeeping) and log a refused
    signature, at most once a minute with how many were held back."""
    WEBHOOK_SECONDS.observe(time.perf_counter() - started)
    refusal = _REFUSALS.get(status)
    if refusal is None:
        event = "-"
        for name, value in scope["headers"]:
            if name == b"x-github-event":
                event = value.decode("latin-1")[:64]
                break
        DELIVERIES.labels(event, str(answer.get("status", status))).inc()
        return
    DELIVERIES.labels("unverified", refusal).inc()
    if status == 401 and (held := _refused.ready()) is not None:
        client = scope.get("client") or ("?", 0)
        log.warning("refused a delivery from %s: missing or invalid X-Hub-Signature-256 "
                    "(check the webhook secret)%s", client[0],
                    f"; {held} more refused in the last minute" if held else "")


def github_answer(method: str, response: Any) -> None:
    """One GitHub call's outcome (``response`` None: no answer) and its rate-limit headers."""
    if response is None:
        GITHUB_CALLS.labels(method, "error").inc()
        return
    GITHUB_CALLS.labels(method, str(response.status_code)).inc()
    remaining = response.headers.get("x-ratelimit-remaining")
    if remaining is not None and remaining.isdigit():
        RATE_REMAINING.labels(response.headers.get("x-ratelimit-resource", "core")).set(
            int(remaining))


def generate() -> bytes:
    if not os.environ.get(MULTIPROCESS_DIR):
        return _generate(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return _generate(registry)


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def process_gone(pid: int) -> None:
    """A child that wrote figures exited: its live gauges (sandboxes running) no longer count."""
    if os.environ.get(MULTIPROCESS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
