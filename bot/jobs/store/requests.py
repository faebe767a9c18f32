"""The conversation around jobs under way: triggers and commands to answer, and who was
answered already (the requests and replies tables)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from bot.jobs.schema import requests
from bot.jobs.store.database import Database

CLAIM_REPLY = sa.text("INSERT INTO replies (scope, login, created_at) VALUES (:scope, :login, "
                      ":now) ON CONFLICT DO NOTHING RETURNING login")


class Requests(Database):
    """Requests to answer, each taken by one worker, and replies given once."""

    def add_request(self, conn: sa.Connection, job_id: int, repo: str, number: int, kind: str,
                    requested_by: str, comment_id: int | None) -> None:
        """Note a trigger or command that reached a job under way, to be answered on GitHub."""
        conn.execute(requests.insert().values(
            job_id=job_id, repo=repo, number=number, kind=kind, requested_by=requested_by,
            comment_id=comment_id, created_at=time.time()))

    async def unanswered_requests(self, limit: int = 50) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(requests.select().where(requests.c.answered.is_(False))
                                       .order_by(requests.c.id).limit(limit))).all()
        return [dict(r._mapping) for r in rows]

    async def claim_request(self, request_id: int) -> bool:
        """Take a request to answer; False if another worker took it first."""
        stmt = (requests.update().where(requests.c.id == request_id,
                                        requests.c.answered.is_(False)).values(answered=True))
        return bool(await self.write(lambda conn: conn.execute(stmt).rowcount))

    async def claim_reply(self, scope: str, login: str) -> bool:
        """Whether Handoff may answer ``login`` about ``scope`` (``job:12``): True the first
        time only, whichever worker asks."""
        params = {"scope": scope[:320], "login": login, "now": time.time()}
        return await self.write(lambda conn: conn.execute(CLAIM_REPLY, params).first()
                                is not None)
