"""The job record: typed sub-records, versioned; a row stored in an older (flat) shape still
loads, and a job goes on from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import CALC_WITH_TESTS, FIX_SCRIPT

from bot.jobs.record import VERSION, JobRecord, Spent
from bot.jobs.store import Store
from bot.jobs.testreport import TestReport
from bot.jobs.verdict import Verdict
from bot.reporter.status import MARKER
from devkit.stack import stack

REPO = "acme/calc"
# A row as version 1 stored it: flat, its reports, spend and verdict as dicts.
FLAT_ROW: dict[str, Any] = {
    "version": 1, "acknowledged": True, "summary": "Fixed it", "status_comment_id": "41",
    "branch": "agent/issue-1-fix", "base": "main", "head_sha": None, "pr_url": "",
    "spend": {"steps": 2, "cost_usd": 0.5, "wall_seconds": 3.0, "tokens_unknown": 1},
    "test_command": "pytest", "tests_after": "pass — 1 passed",
    "tests_after_report": {"command": "pytest", "state": "ran", "ok": True,
                           "counts": {"passed": 1}},
    "verdict": {"conclusion": "success", "title": "ready", "stage": "done",
                "fixed": ["test_add"]},
    "regression": False, "agent_checkpoint": {}, "baseline_report": {},
    "iterations": [{"job_id": 3, "kind": "implement", "summary": "s",
                    "spend": {"steps": 1, "cost_usd": 0.25}, "shown": ["test_add"]}],
    "inputs_seen": ["issue #1 title and body"], "template": "bug",
}


def test_a_flat_row_of_version_1_reads_back_into_the_sub_records() -> None:
    record = JobRecord.load(FLAT_ROW)
    assert record.version == VERSION
    assert (record.summary, record.status_comment_id, record.delivery.head_sha) == \
        ("Fixed it", 41, "")
    assert record.delivery.branch == "agent/issue-1-fix" and record.inputs.template == "bug"
    assert record.agent.spend == Spent(steps=2, cost_usd=0.5, wall_seconds=3.0)
    assert record.tests.after_report == TestReport("pytest", "ran", ok=True,
                                                   counts={"passed": 1})
    assert record.verdict == Verdict("success", "ready", "done", fixed=["test_add"])
    assert record.agent.checkpoint is None and record.tests.base_report is None
    assert record.iterations[0].spend.cost_usd == 0.25
    assert JobRecord.load(record.dump()) == record  # the new shape reads back as itself


def test_a_row_written_before_records_had_a_version_reads_back_typed() -> None:
    record = JobRecord.load({"summary": "s", "pr_url": "https://example/pull/3"})
    assert record.delivery.pr_url == "https://example/pull/3"


def test_a_record_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError):
        JobRecord.load({"review_threads": "not a list"})
    with pytest.raises(ValueError):
        JobRecord().with_(pr_url="a flat key of the old shape")


async def test_the_store_keeps_the_record_typed(tmp_path: object) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    try:
        job_id = await store.write(lambda conn: store.insert_job(
            conn, kind="implement", repo="o/r", installation_id=1, requested_by="maya",
            issue_number=1))
        assert job_id is not None
        record = JobRecord(summary="done", timings={"agent": 1.5},
                           verdict=Verdict("neutral", "t", "done-unproven"))
        await store.update_job(job_id, result=record)
        job = await store.get_job(job_id)
        assert job is not None and job.result == record
    finally:
        await store.close()


async def test_a_job_stored_in_the_flat_shape_goes_on_from_it(tmp_path: Path) -> None:
    """A job a worker of the previous version left half done (its status comment posted and
    its record flat) is taken up by this version: the same status comment ends it, and no
    second acknowledgement is made."""
    async with stack(tmp_path, FIX_SCRIPT, sandbox="local") as s:
        repo = s.sim.add_repo(REPO, CALC_WITH_TESTS)
        number = s.sim.open_issue(REPO, "add() subtracts", "add(2, 3) is 5", "acme").number
        posted = s.sim.comment(REPO, number, f"{MARKER}\nHandoff is on it", s.settings.bot_login,
                               "Bot")
        row = {"version": 1, "acknowledged": True, "status_comment_id": posted.id,
               "spend": {}, "verdict": {}, "agent_checkpoint": {}, "iterations": []}
        job_id = await s.store.write(lambda conn: s.store.insert_job(
            conn, kind="implement", repo=REPO, installation_id=repo.installation_id,
            issue_number=number, requested_by="acme", result=row))
        assert job_id is not None
        await s.store.update_job(job_id, stage="agent")  # where the old worker stopped
        s.worker.wake.set()
        job = await s.wait_job(lambda j: j.id == job_id)
        assert job.state == "succeeded", job.reason
        assert job.result.version == VERSION and job.result.delivery.pr_url
        assert job.result.status_comment_id == posted.id
        comments = s.sim.get_repo(REPO).issues[number].comments
        status = [c for c in comments if c.body.startswith(MARKER)]
        assert [c.id for c in status] == [posted.id] and "Pull request" in status[0].body
        assert s.sim.get_repo(REPO).issues[number].reactions == []  # acknowledged before
