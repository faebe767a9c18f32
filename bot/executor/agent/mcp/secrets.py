"""Where a remote MCP server's secrets come from, by name: one lookup, to be pointed at the
server's secrets store (``handoff secrets``) when it lands; until then the worker's
environment, ``HANDOFF_SECRET_<NAME>``."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

SecretLookup = Callable[[str], Awaitable[str | None]]  # a name -> its value, None if unset


def environment_secrets(repo: str) -> SecretLookup:
    """Secrets for ``repo``'s jobs from the worker's environment (the same for every
    repository until the scoped store replaces this)."""

    async def lookup(name: str) -> str | None:
        return os.environ.get(f"HANDOFF_SECRET_{name}") or None

    return lookup
