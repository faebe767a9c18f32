"""Monthly budgets across jobs: caps per organisation, repository and person, counted from
the store, refused with the cap and its reset on the issue, shown by `handoff budgets` and in
/metrics."""

from __future__ import annotations

import calendar
import os
import subprocess
import sys
from pathlib import Path

import pytest
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT, TEST_COMMAND
from helpers import seed_state

from bot.jobs.budgets import Budgets, OverBudget, month_bounds
from bot.jobs.record import AgentRun, JobRecord, Spent
from bot.jobs.store import Store
from devkit.stack import stack

ROOT = Path(__file__).parent.parent
DEC = calendar.timegm((2026, 12, 7, 12, 0, 0))


async def job(store: Store, repo: str, person: str, dollars: float, issue: int,
              created: float = DEC, started: bool = True) -> int:
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo=repo, issue_number=issue, requested_by=person,
        installation_id=1))
    assert job_id is not None
    await seed_state(store, job_id, "succeeded", created_at=created,
                     started_at=created if started else None,
                     result=JobRecord(agent=AgentRun(spend=Spent(cost_usd=dollars, steps=3))))
    return job_id


def test_a_month_is_a_calendar_month_in_utc() -> None:
    start, end = month_bounds(DEC)
    assert (start, end) == (calendar.timegm((2026, 12, 1, 0, 0, 0)),
                            calendar.timegm((2027, 1, 1, 0, 0, 0)))


async def test_caps_count_this_month_by_scope(store: Store) -> None:
    budgets = Budgets(store.engine)
    await budgets.set("org", "Acme", dollars=10.0, count=None)
    await budgets.set("person", "maya", dollars=None, count=2)
    await job(store, "acme/calc", "maya", 4.0, issue=1)
    await job(store, "ACME/web", "bob", 3.5, issue=2)
    await job(store, "other/x", "maya", 50.0, issue=3)
    await job(store, "acme/calc", "bob", 99.0, issue=4, created=DEC - 40 * 86400)  # November
    await job(store, "acme/calc", "maya", 0.0, issue=5, started=False)  # queued, never began

    # bob on acme: the org has $2.50 left, which caps what the job's agent may spend
    assert await budgets.check(100, "acme/calc", "bob", now=DEC) == pytest.approx(2.5)
    # maya has started two jobs this month (the one on other/x counts): her third is refused
    with pytest.raises(OverBudget) as refused:
        await budgets.check(100, "acme/calc", "maya", now=DEC)
    assert str(refused.value).startswith("The monthly budget of the person maya: 2 of 2 jobs "
                                         "is used up. It resets on 2027-01-01 (UTC)")
    # the job asking is not counted against itself (a resumed job has spent already)
    third = await job(store, "acme/web", "carol", 2.5, issue=6)
    with pytest.raises(OverBudget):
        await budgets.check(101, "acme/web", "carol", now=DEC)
    assert await budgets.check(third, "acme/web", "carol", now=DEC) == pytest.approx(2.5)
    assert await budgets.remove("org", "ACME") and not await budgets.remove("org", "acme")
    assert await budgets.check(101, "acme/web", "carol", now=DEC) is None


def handoff(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env.update(HANDOFF_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bot.cli", "budgets", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)


def test_budgets_command(tmp_path: Path) -> None:
    assert "no budgets" in handoff(tmp_path).stdout
    made = handoff(tmp_path, "set", "org", "acme", "--dollars", "50", "--jobs", "20")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("organisation acme: $0.00 of $50.00, 0 of 20 jobs  (resets ")
    assert handoff(tmp_path, "set", "org", "acme").returncode == 2  # no cap given
    assert handoff(tmp_path, "rm", "repo", "acme/none").returncode == 1
    assert handoff(tmp_path, "rm", "org", "acme").returncode == 0
    assert "no budgets" in handoff(tmp_path, "list").stdout


@pytest.mark.podman
async def test_a_job_over_the_monthly_cap_is_refused_on_the_issue(tmp_path: Path) -> None:
    async with stack(tmp_path, FIX_SCRIPT) as s:
        s.sim.add_repo("acme/calc", {**BUGGY_REPO,
                                     ".github/handoff.yml": f"test_command: {TEST_COMMAND}\n"})
        await Budgets(s.store.engine).set("repo", "acme/calc", dollars=None, count=1)
        first = await s.handed_over("acme/calc", "add() is wrong", "fix add")
        assert first.state == "succeeded", first.reason
        asked = len(s.model.requests)
        second = await s.handed_over("acme/calc", "sub() is wrong too", "fix sub")
        assert (second.state, second.category) == ("failed", "monthly-budget")
        assert len(s.model.requests) == asked  # no model call for a refused job
        said = s.sim.get_repo("acme/calc").issues[second.issue_number].comments[-1].body
        assert "monthly budget of the repository acme/calc: 1 of 1 jobs is used up" in said
        assert "It resets on " in said and "handoff budgets set repo acme/calc" in said


async def test_metrics_show_each_cap_and_its_spend(store: Store) -> None:
    from bot import metrics, metrics_port

    await Budgets(store.engine).set("org", "acme", dollars=20.0, count=None)
    await job(store, "acme/calc", "maya", 4.25, issue=1, created=month_bounds()[0] + 60)
    await metrics_port.refresh_jobs(store)
    text = metrics.generate().decode()
    assert 'handoff_budget_cap_dollars{name="acme",scope="org"} 20.0' in text
    assert 'handoff_budget_spent_dollars{name="acme",scope="org"} 4.25' in text


async def test_a_scrape_counts_spend_in_the_same_queries_however_many_caps(store: Store
                                                                           ) -> None:
    from sqlalchemy import event

    from bot import metrics, metrics_port

    budgets = Budgets(store.engine)
    start = month_bounds()[0] + 60
    await job(store, "acme/calc", "maya", 4.25, issue=1, created=start)
    await job(store, "acme/web", "bob", 1.5, issue=2, created=start)
    await job(store, "other/x", "maya", 2.0, issue=3, created=start)

    async def queries_of_a_scrape() -> int:
        seen: list[str] = []

        def count(*args: object) -> None:
            seen.append(str(args[2]))

        event.listen(store.engine.sync_engine, "before_cursor_execute", count)
        try:
            await metrics_port.refresh_budgets(store)
        finally:
            event.remove(store.engine.sync_engine, "before_cursor_execute", count)
        return len(seen)

    await budgets.set("org", "acme", dollars=20.0, count=None)
    one_cap = await queries_of_a_scrape()
    for n in range(40):
        await budgets.set("person", f"someone{n}", dollars=5.0, count=None)
    await budgets.set("repo", "acme/web", dollars=3.0, count=None)
    await budgets.set("person", "maya", dollars=10.0, count=None)
    assert await queries_of_a_scrape() == one_cap <= 2  # the caps, and the month's spend
    text = metrics.generate().decode()
    assert 'handoff_budget_spent_dollars{name="acme",scope="org"} 5.75' in text
    assert 'handoff_budget_spent_dollars{name="acme/web",scope="repo"} 1.5' in text
    assert 'handoff_budget_spent_dollars{name="maya",scope="person"} 6.25' in text
    assert 'handoff_budget_spent_dollars{name="someone7",scope="person"} 0.0' in text
    # the same figures as each cap counted on its own (what a job's check uses)
    caps = await budgets.caps()
    assert [(u.dollars, u.jobs) for u in await budgets.usages(caps)] == \
        [((use := await budgets.usage(cap)).dollars, use.jobs) for cap in caps]
