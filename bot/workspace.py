"""Workspaces: a mirror per repository on disk, and a fresh checkout per job."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from bot.gitops import GitError, git


class Workspaces:
    """Mirrors under ``data_dir/mirrors``; job checkouts under ``data_dir/workspaces``."""

    def __init__(self, data_dir: Path) -> None:
        self.mirrors = data_dir / "mirrors"
        self.root = data_dir / "workspaces"
        self.locks: dict[str, asyncio.Lock] = {}

    def mirror_path(self, full_name: str) -> Path:
        return self.mirrors / f"{full_name}.git"

    async def refresh_mirror(self, full_name: str, clone_url: str, token: str) -> Path:
        """Clone the mirror the first time; afterwards fetch only what is new."""
        path = self.mirror_path(full_name)
        async with self.locks.setdefault(full_name, asyncio.Lock()):
            if (path / "HEAD").exists():
                await git("fetch", "--prune", "--quiet", clone_url,
                          "+refs/heads/*:refs/heads/*", cwd=path, token=token)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                await git("clone", "--bare", "--quiet", clone_url, str(tmp), token=token)
                tmp.rename(path)
        return path

    async def checkout(self, job_id: int, full_name: str, branch: str, base: str,
                       clone_url: str, token: str) -> Path:
        """A fresh working tree on ``branch``: the existing one, or a new one off ``base``.

        Objects are shared with the mirror, so the cost does not grow with history.
        """
        mirror = await self.refresh_mirror(full_name, clone_url, token)
        path = self.root / str(job_id)
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        await git("clone", "--quiet", "--shared", "--no-checkout", str(mirror), str(path))
        await git("remote", "set-url", "origin", clone_url, cwd=path)
        try:
            await git("rev-parse", "--verify", "-q", f"refs/remotes/origin/{branch}", cwd=path)
            await git("checkout", "--quiet", "-B", branch, f"refs/remotes/origin/{branch}",
                      cwd=path)
        except GitError:
            await git("checkout", "--quiet", "-b", branch, f"refs/remotes/origin/{base}",
                      cwd=path)
        return path

    def remove(self, job_id: int) -> None:
        shutil.rmtree(self.root / str(job_id), ignore_errors=True)
