"""Where a remote MCP server's secrets come from, by name: the server's secrets store
(``handoff secrets``, the most specific scope first), else the worker's environment,
``HANDOFF_SECRET_<NAME>``."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from bot import logs
from bot.jobs.secrets import Secrets, SecretsError

log = logging.getLogger("handoff.executor")

SecretLookup = Callable[[str], Awaitable[str | None]]  # a name -> its value, None if unset


def environment_secrets(repo: str) -> SecretLookup:
    """Secrets for ``repo``'s jobs from the worker's environment (the same for every
    repository until the scoped store replaces this)."""

    async def lookup(name: str) -> str | None:
        return os.environ.get(f"HANDOFF_SECRET_{name}") or None

    return lookup


def stored_secrets(engine: AsyncEngine, key: str | None, installation_id: int | None,
                   repo: str) -> SecretLookup:
    """Secrets for ``repo``'s jobs from the store (redacted in all their forms from then
    on), else from the worker's environment; a store that cannot be read (no key, another
    key) is logged and the environment asked."""
    environment = environment_secrets(repo)

    async def lookup(name: str) -> str | None:
        try:
            found = await Secrets(engine, key).for_repo(installation_id, repo, [name])
        except SecretsError as exc:
            log.warning("secret %s for %s: %s", name, repo, exc)
            found = {}
        if name in found:
            logs.add_secrets(found[name], encoded=True)
            return found[name]
        return await environment(name)

    return lookup
