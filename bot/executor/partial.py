"""Cold mirrors fetch only what a job needs.

A worker that has never seen a repository clones its history's commits without their trees
and files (a partial clone, ``--filter=tree:0``); then the trees and files of the commits a
job checks out are fetched ("hydrated"): the default branch's tip, the job's branch and where
they meet. Later fetches stay partial and hydrate what the next job needs; the rest of the
history stays on the server. A server that cannot filter sends everything, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from bot.executor.gitops import GitError, git

FILTER = "tree:0"
BATCH = 500  # object ids per hydrating fetch (each is an argument)


async def clone(url: str, path: Path, token: str, filter_: str = FILTER) -> None:
    """A bare clone of ``url``'s commits at ``path`` (trees and files come with ``hydrate``);
    with no ``filter_``, of everything."""
    await git("clone", "--bare", "--quiet", *([f"--filter={filter_}"] if filter_ else []),
              url, str(path), token=token)


async def is_partial(mirror: Path) -> bool:
    """Whether the mirror was cloned partial (objects may be left on the server)."""
    try:
        return bool((await git(f"--git-dir={mirror}", "config", "--get",
                               "remote.origin.promisor")).strip() == "true")
    except GitError:
        return False


async def fetch(mirror: Path, url: str, token: str) -> None:
    """Fetch every branch (a partial mirror: commits only, through its promisor remote)."""
    if not await is_partial(mirror):
        await git(f"--git-dir={mirror}", "fetch", "--prune", "--quiet", url,
                  "+refs/heads/*:refs/heads/*", token=token)
        return
    await git(f"--git-dir={mirror}", "config", "remote.origin.url", url)
    await git(f"--git-dir={mirror}", "fetch", "--prune", "--quiet", "--no-tags", "origin",
              "+refs/heads/*:refs/heads/*", token=token)


async def hydrate(mirror: Path, url: str, token: str, refs: Sequence[str]) -> int:
    """Fetch the trees and files of ``refs`` (those that exist) and of their merge base that
    the mirror lacks; returns how many objects had to be asked for."""
    commits = [c for ref in refs if (c := await _commit(mirror, ref))]
    if len(commits) > 1:
        with contextlib.suppress(GitError):  # no common history: nothing more to hydrate
            commits.append((await git(f"--git-dir={mirror}", "merge-base", *commits)).strip())
    asked = 0
    for _ in range(4):  # each round fetches what the last one's trees named
        wanted = await missing(mirror, commits)
        if not wanted:
            return asked
        asked += len(wanted)
        for start in range(0, len(wanted), BATCH):
            # No haves: the server would think the mirror holds the trees of the commits it has.
            await git("-c", "fetch.negotiationAlgorithm=noop", f"--git-dir={mirror}", "fetch",
                      "--quiet", "--no-tags", "--no-write-fetch-head",
                      "--recurse-submodules=no", url, *wanted[start:start + BATCH],
                      token=token)
    if await missing(mirror, commits):
        raise GitError(f"git fetch failed: {url} did not send the files of "
                       f"{', '.join(c[:7] for c in commits)}")
    return asked


async def missing(mirror: Path, commits: Sequence[str]) -> list[str]:
    """Objects of these commits' trees that the mirror lacks (never fetched on the way)."""
    if not commits or not await is_partial(mirror):
        return []
    listing = await git(f"--git-dir={mirror}", "rev-list", "--objects", "--missing=print",
                        "--no-object-names", "--no-walk", *commits)
    return sorted({line[1:] for line in listing.splitlines() if line.startswith("?")})


async def _commit(mirror: Path, ref: str) -> str:
    try:
        return (await git(f"--git-dir={mirror}", "rev-parse", "--verify", "-q",
                          f"{ref}^{{commit}}")).strip()
    except GitError:
        return ""
