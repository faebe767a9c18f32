from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Podman on hosts like CI's needs runc and low ulimits (see deploy/sandbox/containers.conf).
os.environ.setdefault(
    "CONTAINERS_CONF", str(Path(__file__).parent.parent / "deploy/sandbox/containers.conf"))

from bot.devstack import postgres_bin, throwaway_postgres  # noqa: E402
from bot.store import Store  # noqa: E402


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    yield s
    await s.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on a Unix socket, or HANDOFF_TEST_PG_URL if given."""
    if url := os.environ.get("HANDOFF_TEST_PG_URL"):
        yield url
        return
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with throwaway_postgres(5433) as url:
        yield url.format(db="postgres")
