"""The same store code path on PostgreSQL: migrations, one active job, SKIP LOCKED claims."""

from __future__ import annotations

import asyncio
import time
import uuid

from bot.jobs.store import Store


async def test_store_on_postgres(pg_url: str) -> None:
    store = await Store.open(pg_url)
    await (await Store.open(pg_url)).close()  # migrating twice is a no-op
    repo = f"o/{uuid.uuid4().hex[:8]}"
    ids = await store.write(lambda conn: [store.insert_job(
        conn, kind="implement", repo=repo, issue_number=n, requested_by="alice")
        for n in range(1, 11)])
    assert await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo=repo, issue_number=1, requested_by="bob")) is None
    claimed: list[int] = []
    while True:  # ten workers claim at once, round after round, until nothing is left
        claims = [c for c in await asyncio.gather(*(store.claim(f"w{i}", 60) for i in range(10)))
                  if c is not None]
        if not claims:
            break
        claimed += [c.id for c in claims if c.repo == repo]  # other tests share the server
    assert sorted(claimed) == sorted(i for i in ids if i is not None)  # each job exactly once
    await store.close()


async def test_budget_spend_and_sessions_on_postgres(pg_url: str) -> None:
    """The JSON path the budget scrape sums, and the dashboard's sessions, on PostgreSQL."""
    from helpers import seed_state

    from bot.dashboard.sessions import Session, Sessions
    from bot.jobs.budgets import Budgets, Cap
    from bot.jobs.record import AgentRun, JobRecord, Spent

    store = await Store.open(pg_url)
    try:
        owner = f"o{uuid.uuid4().hex[:8]}"  # other tests share the server
        for n, dollars in enumerate((1.25, 2.5), start=1):
            job_id = await store.write(lambda conn, n=n: store.insert_job(
                conn, kind="implement", repo=f"{owner}/calc", issue_number=n,
                requested_by="maya"))
            assert job_id is not None
            await seed_state(store, job_id, "succeeded", started_at=time.time(), result=JobRecord(
                agent=AgentRun(spend=Spent(cost_usd=dollars))))
        [use] = await Budgets(store.engine).usages([Cap("org", owner, 10.0, None)])
        assert (use.dollars, use.jobs) == (3.75, 2)

        kept = Sessions(store, "client-secret")
        sid = uuid.uuid4().hex
        await kept.add(sid, Session("maya", "ghu_token", time.time() + 60, frozenset({"a/b"})))
        found = await kept.get(sid)
        assert found and found.token == "ghu_token" and found.repos == {"a/b"}
        assert await Sessions(store, "another-secret").get(sid) is None  # does not open
        await kept.end(sid)
        assert await kept.get(sid) is None
    finally:
        await store.close()
