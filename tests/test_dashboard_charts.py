"""The numbers behind the dashboard's charts, and the charts' marks, from known jobs."""

from __future__ import annotations

from typing import Any

from bot.dashboard.charts import all_charts
from bot.dashboard.signin import safe_next
from bot.dashboard.stats import DAY, Filters, percentile, queue_over_time, summarize
from bot.jobs.store import Job

NOW = 100 * DAY + 43200.0  # noon of day 100


def job(n: int, state: str, created: float, started: float | None = None,
        finished: float | None = None, repo: str = "acme/calc", cost: float = 0.0,
        timings: dict[str, float] | None = None) -> Job:
    values: dict[str, Any] = dict(
        id=n, kind="implement", repo=repo, installation_id=1, issue_number=n, pr_number=None,
        branch=None, state=state, stage="done", requested_by="maya", trigger="", feedback="",
        context={}, delivery_id=None, attempts=1, reason="", category="",
        result={"spend": {"cost_usd": cost}, "timings": timings or {}},
        cancel_requested=False, cancel_by=None, reported=True, not_before=None, deferrals=0,
        lease_owner=None, lease_expires_at=None, created_at=created, updated_at=created,
        started_at=started, finished_at=finished)
    return Job(**values)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 0.5) == 10.0 and percentile(values, 0.95) == 19.0
    assert percentile([7.0], 0.95) == 7.0


def test_summary_per_day_repo_stage_and_queue() -> None:
    today, yesterday = NOW - 3600, NOW - DAY
    jobs = [
        job(1, "succeeded", yesterday, yesterday + 10, yesterday + 70, cost=0.5,
            timings={"agent": 10.0}),
        job(2, "failed", yesterday, yesterday + 20, yesterday + 90, cost=0.25,
            timings={"agent": 30.0}),
        job(3, "succeeded", today, today + 600, today + 900, repo="acme/web", cost=1.0,
            timings={"agent": 20.0, "tests": 4.0}),
        job(4, "queued", NOW - 60),
        job(5, "running", NOW - 30, NOW - 10),
    ]
    s = summarize(jobs, 7, NOW)
    assert len(s.days) == 7 and s.days[-1] == "1970-04-11"  # day 100, today
    assert s.outcomes["succeeded"][-2:] == [1, 1] and s.outcomes["failed"][-2:] == [1, 0]
    assert s.outcomes["active"][-1] == 2 and sum(s.outcomes["cancelled"]) == 0
    assert s.cost_per_day[-2:] == [0.75, 1.0]
    assert s.cost_per_repo == [("acme/web", 1.0), ("acme/calc", 0.75)]
    assert ("agent", 20.0, 30.0, 3) in s.stages and ("tests", 4.0, 4.0, 1) in s.stages
    assert s.success_per_day[-2:] == [0.5, 1.0] and s.success_per_day[0] is None
    assert s.totals["success"] == 2 / 3
    # The queue: job 3 waited 10 minutes this morning; job 4 waits now.
    assert queue_over_time(jobs, today, today + 300, points=2) == [(today, 1), (today + 300, 1)]
    assert queue_over_time(jobs, today + 700, NOW, points=2)[-1] == (NOW, 1)

    charts = "".join(all_charts(s))
    assert charts.count('class="bar bar-succeeded"') == 2
    assert charts.count('class="bar bar-failed"') == 1
    assert "acme/web cost: $1.00" in charts and "agent (3) p95: 30.0s" in charts
    assert charts.count("<figure") == 6 and "<script" not in charts


def test_a_window_without_jobs_says_so() -> None:
    charts = "".join(all_charts(summarize([], 14, NOW)))
    assert charts.count("No jobs in this window.") == 5  # the queue line still draws 0


def test_filters_take_only_what_they_know() -> None:
    f = Filters.of({"repo": " acme/calc ", "person": "@maya", "state": "bogus", "days": "3"})
    assert (f.repo, f.person, f.state, f.days) == ("acme/calc", "maya", "", 14)


def test_next_stays_on_this_site() -> None:
    assert safe_next("/jobs/4?x=1") == "/jobs/4?x=1"
    for away in ("//evil.example/", "/\\evil.example", "/\t/evil.example", "https://e.x/",
                 "jobs", "", None, "/\x00"):
        assert safe_next(away) == "/jobs", away
