"""Workspaces: a mirror per repository, and per job a trusted git directory, a work tree for
the sandbox, and a throwaway ``.git`` in that work tree so the agent can still use git."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from bot.executor import partial, volume
from bot.executor.gitops import Checkout, GitError, git, unreachable

log = logging.getLogger("handoff.executor")

# Where the sandbox sees the mirror's objects (read-only): its own ``.git`` borrows them.
SANDBOX_OBJECTS = "/opt/handoff/objects"


class Workspaces:
    """Mirrors under ``data_dir/mirrors``; per job, ``gitdirs/<id>`` (trusted, never mounted
    into a sandbox) and ``workspaces/<id>`` (the work tree the sandbox edits)."""

    def __init__(self, data_dir: Path, volume_mb: int = 0) -> None:
        self.mirrors = data_dir / "mirrors"
        self.root = data_dir / "workspaces"
        self.gitdirs = data_dir / "gitdirs"
        self.volumes = data_dir / "volumes"
        self.volume_mb = volume_mb  # > 0: each work tree is a file system of this size
        self.locks: dict[str, asyncio.Lock] = {}

    def mirror_path(self, full_name: str) -> Path:
        return self.mirrors / f"{full_name}.git"

    async def refresh_mirror(self, full_name: str, clone_url: str, token: str,
                             wanted: tuple[str, ...] = ()) -> Path:
        """Clone the mirror the first time (partial: commits only, ``bot.executor.partial``);
        afterwards fetch only what is new. The files of the ``wanted`` refs are fetched too."""
        path = self.mirror_path(full_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        async with self.locks.setdefault(full_name, asyncio.Lock()), \
                host_lock(path.with_suffix(".lock")):
            if (path / "HEAD").exists():
                await partial.fetch(path, clone_url, token)
            else:
                await self._clone(path, clone_url, token, partial.FILTER)
            try:
                await partial.hydrate(path, clone_url, token, wanted)
            except GitError as exc:
                if unreachable(exc):
                    raise
                # A server that filters but will not send single objects: clone it whole.
                log.warning("%s: the partial mirror could not fetch a checkout's files (%s); "
                            "cloning it whole", full_name, exc)
                shutil.rmtree(path)
                await self._clone(path, clone_url, token, "")
        return path

    @staticmethod
    async def _clone(path: Path, clone_url: str, token: str, filter_: str) -> None:
        tmp = path.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        await partial.clone(clone_url, tmp, token, filter_)
        tmp.rename(path)

    async def checkout(self, job_id: int, full_name: str, branch: str, base: str,
                       clone_url: str, token: str) -> Checkout:
        """A fresh work tree on ``branch``: the existing one, or a new one off ``base``.

        The trusted git directory borrows the mirror's objects, so the cost does not grow
        with history; the work tree gets a ``.git`` of its own for the agent.
        """
        mirror = await self.refresh_mirror(full_name, clone_url, token,
                                           (f"refs/heads/{base}", f"refs/heads/{branch}"))
        self.remove(job_id)
        co = Checkout(self.gitdirs / str(job_id), self.root / str(job_id))
        await self._new_tree(co.work_tree)
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
        base_sha = await co.rev(f"refs/remotes/origin/{base}")
        await asyncio.to_thread(sandbox_git_dir, co.work_tree, branch, base, base_sha, start)
        await asyncio.to_thread(shutil.copyfile, co.git_dir / "index",
                                co.work_tree / ".git" / "index")
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

    async def snapshot(self, co: Checkout, job_id: int, branch: str, base: str,
                       base_sha: str, start: str) -> Path:
        """A second work tree for the baseline sandbox, as the job's was checked out at
        ``start`` (with a ``.git`` of its own), written by git from the trusted git
        directory's objects. Nothing is read from the job's work tree: the agent may be
        rewriting it (files swapped for symlinks to host files) while this runs."""
        copy = self.root / f"{job_id}-baseline"
        await asyncio.to_thread(self._remove_tree, copy)
        await self._new_tree(copy)
        await asyncio.to_thread(sandbox_git_dir, copy, branch, base, base_sha, start)
        fresh = {"GIT_INDEX_FILE": str(copy / ".git" / "index")}
        await git(f"--git-dir={co.git_dir}", "read-tree", start, env=fresh, cwd=co.git_dir)
        await git(f"--git-dir={co.git_dir}", f"--work-tree={copy}", "checkout-index", "--all",
                  "--force", "-u", env=fresh, cwd=co.git_dir)
        return copy

    async def _new_tree(self, tree: Path) -> None:
        """An empty folder for a work tree, the worker's only until a sandbox is given it; with
        ``volume_mb``, the root of a file system of that size (else the watchdog alone)."""
        tree.parent.mkdir(parents=True, exist_ok=True)
        tree.mkdir(mode=0o700)
        if not self.volume_mb:
            return
        try:
            await volume.mount(tree, self.volumes / f"{tree.name}.img", self.volume_mb)
        except (volume.VolumeError, OSError) as exc:
            log.warning("work tree %s has no volume of its own (%s); the disk watchdog alone "
                        "holds it to its limit", tree.name, exc)
            volume.unmount(tree, self.volumes / f"{tree.name}.img")
        tree.chmod(0o700)

    def _remove_tree(self, tree: Path) -> None:
        volume.unmount(tree, self.volumes / f"{tree.name}.img")
        shutil.rmtree(tree, ignore_errors=True)

    def remove(self, job_id: int) -> None:
        self._remove_tree(self.root / str(job_id))
        self._remove_tree(self.root / f"{job_id}-baseline")
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


def sandbox_git_dir(tree: Path, branch: str, base: str, base_sha: str, head: str) -> None:
    """Write the agent's own ``.git`` into ``tree`` (a work tree no sandbox has run in yet):
    the branch and the base as refs, and the mirror's objects borrowed from where the
    sandbox mounts them; the caller adds the index. Host git never reads it; whatever the
    agent does to it stays in the sandbox."""
    dot = tree / ".git"
    for sub in ("objects/info", "refs/heads", f"refs/remotes/origin/{base}".rsplit("/", 1)[0],
                f"refs/heads/{branch}".rsplit("/", 1)[0]):
        (dot / sub).mkdir(parents=True, exist_ok=True)
    (dot / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    (dot / f"refs/heads/{branch}").write_text(f"{head}\n")
    (dot / f"refs/remotes/origin/{base}").write_text(f"{base_sha}\n")
    (dot / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n"
                                "\tbare = false\n")
    (dot / "objects/info/alternates").write_text(f"{SANDBOX_OBJECTS}\n")
