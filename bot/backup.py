"""``handoff backup`` and ``handoff restore``: the job store to a file and back.

SQLite is copied with its online backup API (consistent while Handoff runs); PostgreSQL with
``pg_dump``'s custom format and ``pg_restore``. A restore replaces the store's contents, so
Handoff must be stopped for it; queued jobs in the backup run again once it starts.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import URL, make_url


class BackupError(RuntimeError):
    """A backup or restore that could not be made, with the reason."""


def backup(db_url: str, dest: Path) -> None:
    """Write a consistent copy of the store at ``db_url`` to ``dest``."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        source = _sqlite_path(url)
        if not source.exists():
            raise BackupError(f"no database at {source}")
        with sqlite3.connect(source) as src, sqlite3.connect(dest) as out:
            src.backup(out)
        os.chmod(dest, 0o600)
        return
    _run(_pg_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={dest}",
         _libpq(url))
    os.chmod(dest, 0o600)


def restore(db_url: str, source: Path) -> None:
    """Replace the store at ``db_url`` with the backup in ``source`` (Handoff stopped)."""
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        target = _sqlite_path(url)
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src:
            try:
                sound = src.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            except sqlite3.DatabaseError:
                sound = False
            if not sound:
                raise BackupError(f"{source} is not a sound SQLite database")
            target.parent.mkdir(parents=True, exist_ok=True)
            for leftover in (Path(f"{target}-wal"), Path(f"{target}-shm")):
                leftover.unlink(missing_ok=True)
            with sqlite3.connect(target) as out:
                src.backup(out)
        return
    _run(_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
         f"--dbname={_libpq(url)}", str(source))


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory database has nothing to back up")
    return Path(url.database)


def _libpq(url: URL) -> str:
    """The SQLAlchemy URL as libpq reads it (no driver name)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def debian_postgres(name: str) -> Path | None:
    """A program of Debian's PostgreSQL, the newest installed version's (not on PATH)."""
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (bindir / name).exists():
            return bindir / name
    return None


def _pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore``: on PATH, else the newest of Debian's PostgreSQL versions."""
    if found := shutil.which(name) or debian_postgres(name):
        return str(found)
    raise BackupError(f"{name} not found (apt-get install postgresql-client)")


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-500:]}")
