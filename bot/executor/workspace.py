"""Workspaces: a mirror per repository, and per job a trusted git directory, a work tree for
the sandbox, and a throwaway ``.git`` in that work tree so the agent can still use git."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from bot.executor.gitops import Checkout, GitError, git

# Where the sandbox sees the mirror's objects (read-only): its own ``.git`` borrows them.
SANDBOX_OBJECTS = "/opt/handoff/objects"


class Workspaces:
    """Mirrors under ``data_dir/mirrors``; per job, ``gitdirs/<id>`` (trusted, never mounted
    into a sandbox) and ``workspaces/<id>`` (the work tree the sandbox edits)."""

    def __init__(self, data_dir: Path) -> None:
        self.mirrors = data_dir / "mirrors"
        self.root = data_dir / "workspaces"
        self.gitdirs = data_dir / "gitdirs"
        self.locks: dict[str, asyncio.Lock] = {}

    def mirror_path(self, full_name: str) -> Path:
        return self.mirrors / f"{full_name}.git"

    async def refresh_mirror(self, full_name: str, clone_url: str, token: str) -> Path:
        """Clone the mirror the first time; afterwards fetch only what is new."""
        path = self.mirror_path(full_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        async with self.locks.setdefault(full_name, asyncio.Lock()), \
                host_lock(path.with_suffix(".lock")):
            if (path / "HEAD").exists():
                await git(f"--git-dir={path}", "fetch", "--prune", "--quiet", clone_url,
                          "+refs/heads/*:refs/heads/*", token=token)
            else:
                tmp = path.with_suffix(".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                await git("clone", "--bare", "--quiet", clone_url, str(tmp), token=token)
                tmp.rename(path)
        return path

    async def checkout(self, job_id: int, full_name: str, branch: str, base: str,
                       clone_url: str, token: str) -> Checkout:
        """A fresh work tree on ``branch``: the existing one, or a new one off ``base``.

        The trusted git directory borrows the mirror's objects, so the cost does not grow
        with history; the work tree gets a ``.git`` of its own for the agent.
        """
        mirror = await self.refresh_mirror(full_name, clone_url, token)
        self.remove(job_id)
        co = Checkout(self.gitdirs / str(job_id), self.root / str(job_id))
        co.work_tree.mkdir(parents=True)
        co.git_dir.parent.mkdir(parents=True, exist_ok=True)
        await git("clone", "--quiet", "--bare", "--shared", str(mirror), str(co.git_dir))
        await co.git("config", "core.bare", "false")
        await co.git("config", "remote.origin.url", clone_url)
        # A bare clone maps heads to heads; the job reads the base as origin's.
        await co.git("update-ref", f"refs/remotes/origin/{base}", f"refs/heads/{base}")
        try:
            start = await co.rev(f"refs/heads/{branch}")
        except GitError:
            start = await co.rev(f"refs/heads/{base}")
        else:
            await co.git("update-ref", f"refs/remotes/origin/{branch}", start)
        await co.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
        await co.git("update-ref", f"refs/heads/{branch}", start)
        await co.git("checkout", "--quiet", "--force", branch)
        await asyncio.to_thread(sandbox_git_dir, co, branch, base,
                                (await co.rev(f"refs/remotes/origin/{base}")), start)
        return co

    async def keep(self, job_id: int, full_name: str, co: Checkout, sha: str) -> None:
        """Keep a job's commit in the repository's mirror (``refs/handoff/kept/<id>``), so
        it outlives the job's workspace; a later checkout borrows the mirror's objects."""
        mirror = self.mirror_path(full_name)
        async with self.locks.setdefault(full_name, asyncio.Lock()), \
                host_lock(mirror.with_suffix(".lock")):
            await co.git("push", "--quiet", "--no-verify", str(mirror),
                         f"{sha}:{kept_ref(job_id)}")

    async def forget(self, job_id: int, full_name: str) -> None:
        """Drop a job's kept commit (the job ended)."""
        mirror = self.mirror_path(full_name)
        if (mirror / "HEAD").exists():
            await git(f"--git-dir={mirror}", "update-ref", "-d", kept_ref(job_id))

    def snapshot(self, job_id: int) -> Path:
        """A copy of a job's work tree as checked out (call it before the agent runs), for
        a second sandbox; symlinks are copied as links, never followed."""
        copy = self.root / f"{job_id}-baseline"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.root / str(job_id), copy, symlinks=True)
        return copy

    def remove(self, job_id: int) -> None:
        shutil.rmtree(self.root / str(job_id), ignore_errors=True)
        shutil.rmtree(self.root / f"{job_id}-baseline", ignore_errors=True)
        shutil.rmtree(self.gitdirs / str(job_id), ignore_errors=True)


def kept_ref(job_id: int) -> str:
    """Where a job's commit is kept in its mirror until the job ends (never under
    ``refs/heads``, which each fetch prunes to GitHub's branches)."""
    return f"refs/handoff/kept/{job_id}"


@contextlib.asynccontextmanager
async def host_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive lock on ``path`` that other worker processes sharing the data directory
    respect too (``flock``); waited for in a thread, so the event loop never blocks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def sandbox_git_dir(co: Checkout, branch: str, base: str, base_sha: str, head: str) -> None:
    """Write the agent's own ``.git`` into the work tree: the branch and the base as refs, the
    index, and the mirror's objects borrowed from where the sandbox mounts them. Host git
    never reads it; whatever the agent does to it stays in the sandbox."""
    dot = co.work_tree / ".git"
    for sub in ("objects/info", "refs/heads", f"refs/remotes/origin/{base}".rsplit("/", 1)[0],
                f"refs/heads/{branch}".rsplit("/", 1)[0]):
        (dot / sub).mkdir(parents=True, exist_ok=True)
    (dot / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    (dot / f"refs/heads/{branch}").write_text(f"{head}\n")
    (dot / f"refs/remotes/origin/{base}").write_text(f"{base_sha}\n")
    (dot / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n"
                                "\tbare = false\n")
    (dot / "objects/info/alternates").write_text(f"{SANDBOX_OBJECTS}\n")
    shutil.copyfile(co.git_dir / "index", dot / "index")
