"""Secrets for setup steps: kept in the job store, sealed with a key only the operator holds.

Each secret belongs to an installation (its id), an organisation (the owner's login) or one
repository (owner/name); a job gets, for each name a setup step lists, the most specific one
(repository over organisation over installation). Values are sealed with AES-256-GCM under
``HANDOFF_SECRETS_KEY``; the row's scope, target and name are the associated data, so a sealed
value copied to another repository's row does not open there. Without the key nothing is
stored or read.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.jobs.schema import secrets

SECRET_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")  # an environment variable's name
SCOPES = {"installation": "installation", "org": "organisation", "repo": "repository"}
MOST_SPECIFIC_FIRST = ("repo", "org", "installation")
PREFIX = "v1:"
MIN_LENGTH = 8  # shorter values could not be told apart from ordinary words when redacting
NO_KEY = ("no key to seal secrets with: set HANDOFF_SECRETS_KEY (make one with `handoff "
          "secrets key`; keep it outside the database and its backups)")


class SecretsError(Exception):
    """A secret cannot be stored or read; the message says why and what to do."""


def new_key() -> str:
    """A fresh 256-bit key, as HANDOFF_SECRETS_KEY takes it."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def target_of(scope: str, target: str) -> str:
    """The stored form of a scope's target; a wrong one is a SecretsError."""
    if scope not in SCOPES:
        raise SecretsError(f"scope must be one of {', '.join(SCOPES)}")
    target = target.strip().lower()
    if scope == "installation" and not target.isdigit():
        raise SecretsError("an installation is named by its id (a number)")
    if scope == "repo" and target.count("/") != 1:
        raise SecretsError("a repository is named owner/name")
    if scope == "org" and (not target or "/" in target):
        raise SecretsError("an organisation is named by its login")
    return target


class Sealer:
    """AES-256-GCM with the operator's key; each value bound to its row."""

    def __init__(self, key: str | None) -> None:
        if not key:
            raise SecretsError(NO_KEY)
        try:
            raw = base64.urlsafe_b64decode(key.strip() + "=" * (-len(key.strip()) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise SecretsError("HANDOFF_SECRETS_KEY is not a key made by `handoff secrets key` "
                               "(32 bytes, URL-safe base64)")
        self.aead = AESGCM(raw)

    def seal(self, row: tuple[str, str, str], value: str) -> str:
        return self.seal_for("\0".join(row).encode(), value)

    def seal_for(self, bound_to: bytes, value: str) -> str:
        """``value`` sealed; it opens only with the same ``bound_to`` (associated data)."""
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, value.encode(), bound_to)
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open_for(self, bound_to: bytes, stored: str) -> str | None:
        """What ``seal_for`` sealed; None when another key sealed it or it was altered."""
        try:
            blob = base64.b64decode(stored.removeprefix(PREFIX))
            return self.aead.decrypt(blob[:12], blob[12:], bound_to).decode()
        except (InvalidTag, binascii.Error, ValueError, UnicodeDecodeError):
            return None

    def open(self, row: tuple[str, str, str], stored: str) -> str:
        value = self.open_for("\0".join(row).encode(), stored)
        if value is None:
            raise SecretsError(f"the secret {row[2]} of {SCOPES[row[0]]} {row[1]} does not "
                               "open with HANDOFF_SECRETS_KEY (another key sealed it, or the "
                               "row was altered); set it again")
        return value


@dataclass(frozen=True)
class Entry:
    """A stored secret, without its value."""

    scope: str
    target: str
    name: str
    updated_at: float


class Secrets:
    """The secrets table, over the job store's database."""

    def __init__(self, engine: AsyncEngine, key: str | None) -> None:
        self.engine, self.key = engine, key

    async def set(self, scope: str, target: str, name: str, value: str) -> None:
        sealer, target = Sealer(self.key), target_of(scope, target)
        if not SECRET_NAME.match(name):
            raise SecretsError("a secret's name is an environment variable's: A-Z, 0-9 and _, "
                               "not starting with a digit")
        if len(value) < MIN_LENGTH or value != value.strip():
            raise SecretsError(f"a secret's value must be at least {MIN_LENGTH} characters, "
                               "with no space or line break at either end (shorter values "
                               "cannot be kept out of posted text reliably)")
        sealed = sealer.seal((scope, target, name), value)
        where = sa.and_(secrets.c.scope == scope, secrets.c.target == target,
                        secrets.c.name == name)
        async with self.engine.begin() as conn:
            done = await conn.execute(secrets.update().where(where).values(
                value=sealed, updated_at=time.time()))
            if not done.rowcount:
                await conn.execute(secrets.insert().values(
                    scope=scope, target=target, name=name, value=sealed,
                    updated_at=time.time()))

    async def remove(self, scope: str, target: str, name: str) -> bool:
        target = target_of(scope, target)
        async with self.engine.begin() as conn:
            return bool((await conn.execute(secrets.delete().where(
                secrets.c.scope == scope, secrets.c.target == target,
                secrets.c.name == name))).rowcount)

    async def entries(self) -> list[Entry]:
        query = sa.select(secrets.c.scope, secrets.c.target, secrets.c.name,
                          secrets.c.updated_at).order_by(secrets.c.scope, secrets.c.target,
                                                          secrets.c.name)
        async with self.engine.connect() as conn:
            return [Entry(*row) for row in (await conn.execute(query)).all()]

    async def for_repo(self, installation_id: int | None, repo: str,
                       names: list[str]) -> dict[str, str]:
        """The values of ``names`` a job on ``repo`` gets, each from its most specific
        scope; names with no secret are left out."""
        if not names:
            return {}
        targets = {"repo": repo.lower(), "org": repo.split("/", 1)[0].lower(),
                   "installation": str(installation_id or "")}
        query = sa.select(secrets).where(secrets.c.name.in_(names), sa.or_(*(
            sa.and_(secrets.c.scope == scope, secrets.c.target == target)
            for scope, target in targets.items() if target)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            return {}
        sealer = Sealer(self.key)
        found: dict[str, str] = {}
        for scope in reversed(MOST_SPECIFIC_FIRST):  # the most specific is written last
            for row in rows:
                if row.scope == scope:
                    found[row.name] = sealer.open((row.scope, row.target, row.name),
                                                  row.value)
        return found
