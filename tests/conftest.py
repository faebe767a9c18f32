from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Podman on hosts like CI's needs runc and low ulimits (see deploy/sandbox/containers.conf).
os.environ.setdefault(
    "CONTAINERS_CONF", str(Path(__file__).parent.parent / "deploy/sandbox/containers.conf"))

from bot.store import Store  # noqa: E402


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    yield s
    await s.close()


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on a Unix socket, or HANDOFF_TEST_PG_URL if given."""
    if url := os.environ.get("HANDOFF_TEST_PG_URL"):
        yield url
        return
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="handoff-pg-"))  # pytest's tmp is private to root
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "pg"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l",
                    str(base / "log"), "-o", f"-k {sock} -c listen_addresses='' -p 5433",
                    "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+asyncpg://pg@/postgres?host={sock}&port=5433"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
