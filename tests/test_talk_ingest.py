"""Ingest of the conversation's events: a review's comments become one job, and Re-run asks
the PR's latest iteration again."""

from __future__ import annotations

from typing import Any

import orjson
from helpers import payload

from bot.jobs.store import Store
from bot.receiver.ingest import ingest
from handlers import Context
from handlers.payload import parse
from handlers.vocabulary import Event

CTX = Context(trigger_label="agent", bot_login="handoff[bot]")
REPO = "Codertocat/Hello-World"


def event(name: str, data: dict[str, Any], delivery: str) -> Event:
    body = orjson.dumps(data)
    return Event(name=name, payload=parse(body), delivery_id=delivery, body=body)


async def agent_pr_job(store: Store, **values: Any) -> int:
    """A finished job that opened (or iterated on) agent PR #2."""
    job_id = await store.write(lambda conn: store.insert_job(
        conn, repo=REPO, issue_number=1, pr_number=2, installation_id=1,
        branch="agent/issue-1-x", **values))
    assert job_id is not None
    claimed = await store.claim("w", 60)
    assert claimed is not None and claimed.id == job_id
    assert await store.finish(job_id, "w", "succeeded", token=claimed.lease_token)
    return job_id


async def test_a_reviews_comments_and_the_review_make_one_job(store: Store) -> None:
    await agent_pr_job(store, kind="implement", requested_by="maya")
    comment = payload("pull_request_review_comment/created")
    comment["pull_request"]["head"]["ref"] = "agent/issue-1-x"
    comment["comment"]["user"]["type"] = "User"
    review = payload("pull_request_review/submitted")
    review["pull_request"].update(number=2, head={"ref": "agent/issue-1-x"})
    review["review"].update(state="changes_requested",
                            id=comment["comment"]["pull_request_review_id"])
    first = await ingest(store, CTX, event("pull_request_review_comment", comment, "d1"))
    assert first.job_id is not None and "queued review job" in first.detail
    second = comment | {"comment": {**comment["comment"], "id": 99, "body": "And here."}}
    joined = await ingest(store, CTX, event("pull_request_review_comment", second, "d2"))
    whole = await ingest(store, CTX, event("pull_request_review", review, "d3"))
    for outcome in (joined, whole):
        assert outcome.job_id is None and f"job {first.job_id} takes up review" in \
            outcome.detail
    assert await store.unanswered_requests() == []  # nobody is told it is under way


async def test_rerun_asks_the_latest_iteration_again(store: Store) -> None:
    asked = await agent_pr_job(store, kind="mention", requested_by="maya",
                               feedback="@handoff cover zero",
                               context={"review_comment_id": 5, "thread_id": 4})
    data = payload("check_run/rerequested")
    data["check_run"].update(name="Handoff", external_id=str(asked), pull_requests=[
        {"number": 2, "head": {"ref": "agent/issue-1-x"}}])
    data["sender"]["login"] = "lee"
    data["repository"]["full_name"] = REPO
    outcome = await ingest(store, CTX, event("check_run", data, "d4"))
    job = await store.get_job(int(outcome.job_id or 0))
    assert job is not None and job.kind == "mention" and job.feedback == "@handoff cover zero"
    assert job.requested_by == "lee" and job.trigger == "rerun"
    assert job.context["thread_id"] == 4 and job.context["origin_job"] == asked
