"""Dashboard sign-in sessions, kept in the job store so that every web replica sees them.

A session is a row (``sessions``): a person signed in on one replica is signed in on all,
and signing out (or GitHub taking the token back) deletes the row, which ends the session
on every replica at once. The browser's cookie holds a random 256-bit id; the row is keyed
by its SHA-256, so the database (or a backup of it) holds no id a browser could use. The
person's GitHub token is sealed (AES-256-GCM) under a key derived from the App's client
secret, which every replica has and the database does not, and bound to its row.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from bot.jobs.schema import sessions
from bot.jobs.secrets import Sealer
from bot.jobs.store import Database


@dataclass
class Session:
    login: str
    token: str
    expires_at: float
    repos: frozenset[str] = frozenset()
    repos_at: float = 0.0
    created_at: float = field(default_factory=time.time)


def key_hash(session_id: str) -> str:
    """The row's key for a session id: what the database holds instead of the id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """The sessions table, over the job store's database."""

    def __init__(self, store: Database, client_secret: str) -> None:
        self.store = store
        key = hmac.new(client_secret.encode(), b"handoff dashboard session tokens",
                       hashlib.sha256).digest()
        self.sealer = Sealer(base64.urlsafe_b64encode(key).decode())

    async def add(self, session_id: str, session: Session) -> None:
        """Keep a new session; sessions past their end are deleted on the way."""
        row = key_hash(session_id)
        values = dict(id_hash=row, login=session.login,
                      token=self.sealer.seal_for(row.encode(), session.token),
                      repos=sorted(session.repos), repos_at=session.repos_at,
                      expires_at=session.expires_at, created_at=session.created_at)

        def write(conn: sa.Connection) -> None:
            conn.execute(sessions.delete().where(sessions.c.expires_at <= time.time()))
            conn.execute(sessions.insert().values(**values))

        await self.store.write(write)

    async def get(self, session_id: str) -> Session | None:
        """The live session of this id; None when there is none, it has ended (then it is
        deleted), or its token does not open with this replica's client secret."""
        row = key_hash(session_id)
        async with self.store.engine.connect() as conn:
            found = (await conn.execute(sessions.select().where(sessions.c.id_hash == row))
                     ).first()
        if found is None:
            return None
        if found.expires_at <= time.time():
            await self.end(session_id)
            return None
        # Sealed under another client secret (a replica not yet given the new one, while
        # it rotates): not a session here, and left for the replicas that open it.
        token = self.sealer.open_for(row.encode(), found.token)
        if token is None:
            return None
        return Session(found.login, token, found.expires_at, frozenset(found.repos),
                       found.repos_at, found.created_at)

    async def set_repos(self, session_id: str, repos: frozenset[str], at: float) -> None:
        """The person's repository list as GitHub gave it again at ``at``."""
        stmt = sessions.update().where(sessions.c.id_hash == key_hash(session_id)).values(
            repos=sorted(repos), repos_at=at)
        await self.store.write(lambda conn: conn.execute(stmt))

    async def end(self, session_id: str) -> None:
        """End the session on every replica."""
        stmt = sessions.delete().where(sessions.c.id_hash == key_hash(session_id))
        await self.store.write(lambda conn: conn.execute(stmt))
