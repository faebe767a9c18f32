"""Recording a batch of deliveries: each acted on once, in order, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import comment, labeled, payload

from bot.jobs.schema import deliveries
from bot.jobs.store import Store
from bot.receiver.ingest import Outcome, record
from handlers import Context
from handlers.payload import parse
from handlers.vocabulary import Event

CTX = Context()


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}" if request.param == "sqlite" \
        else request.getfixturevalue("pg_url")
    store = await Store.open(url)
    yield store
    await store.close()


def event(name: str, data: dict[str, Any], delivery: str, repo: str) -> Event:
    data["repository"]["full_name"] = repo
    return Event(name=name, payload=parse(orjson.dumps(data)), delivery_id=delivery)


async def record_all(store: Store, events: list[Event]) -> list[Outcome]:
    return await store.write(lambda conn: record(store, conn, CTX, events))


def unlabeled(number: int) -> dict[str, Any]:
    data = payload("issues/unlabeled")
    data["label"]["name"] = "agent"
    data["issue"]["number"] = number
    return data


async def test_one_batch_acts_on_each_delivery_once_in_order(any_store: Store) -> None:
    store, repo, tag = any_store, f"o/{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    events = [
        event("issues", labeled(number=1), f"{tag}-a", repo),      # queues a job
        event("issues", labeled(number=1), f"{tag}-b", repo),      # issue already has it
        event("issues", labeled(number=1), f"{tag}-a", repo),      # redelivery of the first
        event("ping", payload("ping/payload"), f"{tag}-p", repo),
        event("issues", labeled("bug", 2), f"{tag}-c", repo),      # not the trigger label
        event("issues", labeled("bug", 2), f"{tag}-c", repo),      # same delivery, same batch
        event("issues", unlabeled(1), f"{tag}-d", repo),           # cancels the queued job
        event("issues", labeled(number=1), f"{tag}-e", repo),      # so this queues a new one
        event("issue_comment", comment("/retry please", on_pr=True, number=7), f"{tag}-f",
              repo),                                               # not an agent PR
    ]
    outcomes = await record_all(store, events)
    assert [o.status for o in outcomes] == [
        "accepted", "accepted", "duplicate", "accepted", "accepted", "duplicate", "accepted",
        "accepted", "accepted"]
    first, second, new = outcomes[0].job_id, outcomes[1], outcomes[7].job_id
    assert first is not None and new is not None and new != first
    assert second.job_id is None and f"already has job {first} (queued)" in second.detail
    assert outcomes[6].detail.startswith(f"cancel requested for job(s) [{first}]")
    assert "not an agent pull request" in outcomes[8].detail
    assert (await store.get_job(first)).state == "cancelled"  # type: ignore[union-attr]
    assert [j.id for j in await store.queued(500) if j.repo == repo] == [new]
    # Every delivery is on record once, with the outcome its sender was given.
    for e, o in zip(events, outcomes, strict=True):
        if o.status == "accepted":
            row = await store.delivery(e.delivery_id)
            assert row and row["outcome"] == o.detail and row["job_id"] == o.job_id


async def test_a_later_batch_sees_earlier_deliveries(any_store: Store) -> None:
    store, repo, tag = any_store, f"o/{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    first = await record_all(store, [event("issues", labeled(), f"{tag}-1", repo),
                                     event("issues", labeled("bug"), f"{tag}-2", repo)])
    again = await record_all(store, [event("issues", labeled("bug"), f"{tag}-2", repo),
                                     event("issues", labeled(), f"{tag}-1", repo),
                                     event("issues", labeled(), f"{tag}-3", repo)])
    assert [o.status for o in first] == ["accepted", "accepted"]
    assert [o.status for o in again] == ["duplicate", "duplicate", "accepted"]
    assert again[2].job_id is None and "already has job" in again[2].detail
    assert len([j for j in await store.queued(500) if j.repo == repo]) == 1


async def test_a_batch_larger_than_one_statement(any_store: Store) -> None:
    store, repo, tag = any_store, f"o/{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    events = [event("issues", labeled("bug"), f"{tag}-{i}", repo) for i in range(250)]
    outcomes = await record_all(store, events + events[:5])
    assert [o.status for o in outcomes] == ["accepted"] * 250 + ["duplicate"] * 5
    for i in (0, 99, 100, 249):
        assert await store.delivery(f"{tag}-{i}")


async def test_old_deliveries_that_started_no_job_are_forgotten(any_store: Store) -> None:
    store, repo, tag = any_store, f"o/{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    outcomes = await record_all(store, [event("issues", labeled(), f"{tag}-job", repo),
                                        event("issues", labeled("bug"), f"{tag}-old", repo),
                                        event("issues", labeled("bug"), f"{tag}-new", repo)])
    assert outcomes[0].job_id is not None
    month_ago = time.time() - 31 * 86400
    await store.write(lambda conn: conn.execute(
        deliveries.update().where(deliveries.c.id.in_([f"{tag}-job", f"{tag}-old"]))
        .values(received_at=month_ago)))
    assert await store.prune_deliveries(30, chunk=1) >= 1
    assert await store.delivery(f"{tag}-old") is None
    assert await store.delivery(f"{tag}-job") and await store.delivery(f"{tag}-new")
    # A redelivery of a forgotten id would be new again, which is why only ids far older
    # than GitHub's three-day redelivery window are forgotten.


async def test_a_job_decision_without_an_issue_is_recorded_not_a_failure(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers.vocabulary import StartJob

    def decide(event: Event, ctx: Context) -> StartJob:  # a handler bug: no issue, no PR
        return StartJob(kind="implement", repo=event.repo, installation_id=None,
                        issue_number=None, requested_by="x")

    monkeypatch.setattr("bot.receiver.ingest.decide", decide)
    [outcome] = await record_all(store, [event("issues", labeled(), "no-issue", "o/r")])
    assert outcome.status == "accepted" and "names no issue" in outcome.detail
