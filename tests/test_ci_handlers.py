"""A failing check on an agent branch: what the handlers decide from GitHub's payloads, and what
ingest lets through with the store's knowledge (Handoff's push only, one job per commit)."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
from helpers import WEBHOOKS

from bot.jobs.record import Delivery, JobRecord
from bot.jobs.schema import jobs
from bot.jobs.store import Store
from bot.receiver.ingest import follow_up, ingest
from handlers import Context, decide
from handlers.payload import parse
from handlers.vocabulary import CI_FIX, Event, Ignore, StartJob

CTX = Context(trigger_label="agent", bot_login="handoff[bot]")
BRANCH = "agent/issue-7-fix-it"
SHA = "a" * 40


def fixture(name: str) -> dict:  # type: ignore[type-arg]
    return orjson.loads((WEBHOOKS / name).read_bytes())  # type: ignore[no-any-return]


def check_run(conclusion: str = "failure", slug: str = "github-actions",
              branch: str = BRANCH, sha: str = SHA) -> dict:  # type: ignore[type-arg]
    data = copy.deepcopy(fixture("check_run/completed.json"))
    run = data["check_run"]
    run.update(conclusion=conclusion, head_sha=sha, name="lint")
    run["app"]["slug"] = slug
    run["check_suite"].update(head_branch=branch, head_sha=sha)
    for pull in run["pull_requests"]:
        pull["number"] = 3
    return data  # type: ignore[no-any-return]


def ev(name: str, data: dict, delivery: str = "d") -> Event:  # type: ignore[type-arg]
    body = orjson.dumps(data)
    return Event(name=name, payload=parse(body), delivery_id=delivery, body=body)


def test_a_failed_check_on_an_agent_branch_starts_a_ci_fix() -> None:
    decision = decide(ev("check_run", check_run()), CTX)
    assert isinstance(decision, StartJob)
    assert (decision.kind, decision.issue_number, decision.pr_number) == (CI_FIX, 7, 3)
    assert decision.context["head_sha"] == SHA and decision.context["check"] == "lint"


@pytest.mark.parametrize("data, why", [
    (check_run(conclusion="success"), "nothing failed"),
    (check_run(conclusion="cancelled"), "nothing failed"),
    (check_run(slug="handoff"), "Handoff's own check"),
    (check_run(branch="feature/x"), "not an agent branch"),
])
def test_what_a_check_run_does_not_start(data: dict, why: str) -> None:  # type: ignore[type-arg]
    decision = decide(ev("check_run", data), CTX)
    assert isinstance(decision, Ignore) and why in decision.reason


def test_suites_workflow_runs_and_statuses_from_githubs_payloads() -> None:
    suite = copy.deepcopy(fixture("check_suite/completed.json"))
    suite["check_suite"].update(conclusion="failure", head_branch=BRANCH, head_sha=SHA)
    decision = decide(ev("check_suite", suite), CTX)
    assert isinstance(decision, StartJob) and decision.issue_number == 7
    workflow = {"action": "completed", "repository": suite["repository"],
                "sender": suite["sender"], "workflow_run": {
                    "name": "CI", "head_branch": BRANCH, "head_sha": SHA,
                    "conclusion": "failure", "pull_requests": []}}
    decision = decide(ev("workflow_run", workflow), CTX)
    assert isinstance(decision, StartJob) and decision.pr_number is None
    status = {"sha": SHA, "state": "error", "context": "ci/jenkins",
              "branches": [{"name": "main"}, {"name": BRANCH}],
              "repository": suite["repository"], "sender": suite["sender"]}
    decision = decide(ev("status", status), CTX)
    assert isinstance(decision, StartJob) and decision.context["check"] == "ci/jenkins"
    decision = decide(ev("status", {**status, "state": "pending"}), CTX)
    assert isinstance(decision, Ignore)


@pytest.fixture
async def store(tmp_path: Path) -> Store:  # type: ignore[misc]
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    yield s
    await s.close()


async def set_row(store: Store, job_id: int, **values: object) -> None:
    """Put a job's row in a state for the test (as the worker's transitions would)."""
    await store.write(lambda conn: conn.execute(
        jobs.update().where(jobs.c.id == job_id).values(**values)))


async def agent_pr(store: Store, repo: str, pushed: str) -> int:
    """An implement job that opened PR #3 for issue 7 with ``pushed`` as its head, ended."""
    record = JobRecord(delivery=Delivery(head_sha=pushed, pushed_branch=BRANCH, branch=BRANCH,
                                         pr_url="https://example.invalid/pull/3", pr_number=3))
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo=repo, installation_id=1, issue_number=7,
        requested_by="maya", branch=BRANCH))
    assert job_id is not None
    await set_row(store, job_id, state="succeeded", pr_number=3, result=record.dump())
    return job_id


async def test_ingest_acts_on_handoffs_own_push_once(store: Store) -> None:
    data = check_run()
    repo = data["repository"]["full_name"]
    first = await agent_pr(store, repo, SHA)
    outcome = await ingest(store, CTX, ev("check_run", data, "d1"))
    assert outcome.job_id is not None, outcome.detail
    job = await store.get_job(outcome.job_id)
    assert job is not None and job.kind == CI_FIX
    # On behalf of who handed the issue over; on the same branch and pull request.
    assert (job.requested_by, job.pr_number, job.branch) == ("maya", 3, BRANCH)
    assert job.context["origin_job"] == first and job.context["head_sha"] == SHA
    # The suite's event for the same commit while the job is queued: nothing more.
    again = check_run()
    again["check_run"]["name"] = "tests"
    outcome = await ingest(store, CTX, ev("check_run", again, "d2"))
    assert outcome.job_id is None and "under way" in outcome.detail
    # Once that job ended without pushing, the commit's later failures start nothing either.
    await set_row(store, job.id, state="failed", category="ci-stopped")
    outcome = await ingest(store, CTX, ev("check_run", again, "d3"))
    assert outcome.job_id is None and "already" in outcome.detail


async def test_a_commit_a_person_pushed_starts_nothing(store: Store) -> None:
    data = check_run(sha="b" * 40)
    await agent_pr(store, data["repository"]["full_name"], SHA)
    outcome = await ingest(store, CTX, ev("check_run", data))
    assert outcome.job_id is None
    assert "not the commit Handoff pushed last" in outcome.detail
    assert len(await store.list_jobs()) == 1


async def test_a_status_names_a_branch_and_finds_the_pull_request(store: Store) -> None:
    repo = fixture("check_run/completed.json")["repository"]
    await agent_pr(store, repo["full_name"], SHA)
    status = {"sha": SHA, "state": "failure", "context": "ci/jenkins",
              "branches": [{"name": BRANCH}], "repository": repo,
              "sender": {"login": "jenkins", "type": "Bot"}}
    outcome = await ingest(store, CTX, ev("status", status))
    assert outcome.job_id is not None, outcome.detail
    job = await store.get_job(outcome.job_id)
    assert job is not None and job.pr_number == 3 and job.kind == CI_FIX


async def test_a_check_red_before_the_pushing_job_ends_is_fixed_after_it(store: Store) -> None:
    """GitHub's CI can answer before the job that pushed has opened its PR and ended: the
    failure is noted on that job, and its fix is queued once the job ends."""
    data = check_run()
    data["check_run"]["pull_requests"] = []
    repo = data["repository"]["full_name"]
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo=repo, installation_id=1, issue_number=7,
        requested_by="maya", branch=BRANCH))
    assert job_id is not None
    pushed = JobRecord(delivery=Delivery(head_sha=SHA, pushed_branch=BRANCH, branch=BRANCH))
    await set_row(store, job_id, state="running", result=pushed.dump())
    outcome = await ingest(store, CTX, ev("check_run", data, "d1"))
    assert outcome.job_id == job_id and "noted on job" in outcome.detail
    assert await store.write(lambda conn: follow_up(store, conn, job_id)) is None  # running
    await set_row(store, job_id, state="succeeded", pr_number=3,
                           result=pushed.with_(delivery=Delivery(
                               head_sha=SHA, pushed_branch=BRANCH, branch=BRANCH, pr_number=3,
                               pr_url="u")).dump())
    new = await store.write(lambda conn: follow_up(store, conn, job_id))
    assert new is not None
    job = await store.get_job(new)
    assert job is not None and (job.kind, job.pr_number, job.requested_by) == (CI_FIX, 3, "maya")
    assert job.context["head_sha"] == SHA and job.context["origin_job"] == job_id
    # Once only: the same note starts nothing more.
    assert await store.write(lambda conn: follow_up(store, conn, job_id)) is None
