from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Podman on hosts like CI's needs runc and low ulimits (see deploy/sandbox/containers.conf).
os.environ.setdefault(
    "CONTAINERS_CONF", str(Path(__file__).parent.parent / "deploy/sandbox/containers.conf"))

from bot.jobs.store import Store  # noqa: E402
from devkit import npm_registry  # noqa: E402
from devkit.stack import postgres_bin, throwaway_postgres  # noqa: E402

# tests/fixtures/repos holds other projects' test suites: they run in sandboxes, never here.
collect_ignore_glob = ["fixtures/*"]
SANDBOX_IMAGE = os.environ.get("HANDOFF_SANDBOX_IMAGE", "handoff-sandbox:dev")


@functools.cache
def podman_missing() -> str | None:
    """Why tests marked ``podman`` cannot run here, or None; asked once per session."""
    if not shutil.which("podman"):
        return "needs Podman, which is not installed (scripts/install.sh)"
    probe = subprocess.run(["podman", "image", "exists", SANDBOX_IMAGE], capture_output=True)
    if probe.returncode != 0:
        return f"needs Podman's image {SANDBOX_IMAGE}, which is missing (deploy/sandbox/build.sh)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``podman`` (a module's ``pytestmark``, a test, or a parameter) are
    skipped, with the reason, where Podman or the sandbox image is missing."""
    for item in items:
        if item.get_closest_marker("podman") is not None and (reason := podman_missing()):
            item.add_marker(pytest.mark.skip(reason=reason))


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


@pytest.fixture(scope="session")
def npm_packages() -> list[npm_registry.Wanted]:
    """The real npm packages of tests/fixtures/npm/packages.txt (mocha's and jest's trees),
    in the cache: fetched once with the host's npm, which reaches registry.npmjs.org (or
    the organisation's mirror) as its configuration says."""
    packages = npm_registry.wanted()
    npm_registry.fetch(packages, npm_registry.cache_dir())
    return packages


@pytest.fixture
def local_npm(npm_packages: list[npm_registry.Wanted]
                     ) -> Iterator[npm_registry.Registry]:
    """A local npm registry on 127.0.0.1 serving those packages (its URL is ``.url``)."""
    with npm_registry.serve(npm_packages, npm_registry.cache_dir()) as registry:
        yield registry
