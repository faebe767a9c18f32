"""The same store code path on PostgreSQL: migrations, one active job, SKIP LOCKED claims."""

from __future__ import annotations

import asyncio
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
