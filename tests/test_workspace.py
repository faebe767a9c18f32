"""Workspaces: worker processes sharing a data directory share its mirrors safely."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from bot.executor.workspace import Workspaces


def origin(tmp_path: Path) -> Path:
    work, bare = tmp_path / "work", tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(work)], check=True)
    for n in range(200):
        (work / f"f{n}.txt").write_text(f"{n}\n" * 50)
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=a", "-c", "user.email=a@b",
                    "commit", "-qm", "init"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


async def test_workers_sharing_a_data_dir_check_out_the_same_new_repository(
        tmp_path: Path) -> None:
    bare = origin(tmp_path)
    # One Workspaces per worker process: their in-process locks know nothing of each other.
    workers = [Workspaces(tmp_path / "data") for _ in range(4)]
    checkouts = await asyncio.gather(*(
        w.checkout(n, "acme/app", f"agent/issue-{n}", "main", str(bare), "")
        for n, w in enumerate(workers, start=1)))
    for co in checkouts:
        assert (co.work_tree / "f199.txt").read_text().startswith("199")
        assert await co.rev("HEAD")
