"""Git on the worker's side, in a git directory the sandbox never sees.

Every host git command runs with the system and global config off, hooks off, and every
setting that can start a program or send a credential pinned to a harmless value. A job's
git directory lives outside its work tree (``Checkout``), so nothing the agent writes is
ever read as git configuration, hooks, alternates or refs. The token travels in the
environment as a header, never in argv or on disk.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bot.logs import redact


class GitError(Exception):
    """A git command failed; the message holds git's own words (with secrets redacted)."""


# How git says the remote did not answer (as opposed to refusing what was asked).
UNREACHABLE = re.compile(r"Failed to connect|Couldn't connect|Connection refused|Could not "
                         r"resolve host|timed out|Connection reset|Empty reply from server|"
                         r"returned error: 5\d\d|RPC failed; HTTP 5\d\d", re.IGNORECASE)


def unreachable(exc: GitError) -> bool:
    """The remote (GitHub) could not be reached or failed with a 5xx: worth trying later."""
    return bool(UNREACHABLE.search(str(exc)))


def auth_env(token: str | None) -> dict[str, str]:
    """Environment that makes git send the token as a header, seen in no argv and no file."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false"}
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
    return env


BASE_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "LANG": "C",
    "GIT_ATTR_NOSYSTEM": "1", "GIT_NO_REPLACE_OBJECTS": "1",
}

# Settings that can run a program, send a credential or read another repository, pinned on
# every command (command-line settings win over any config file).
PINNED = (
    "core.hooksPath=/dev/null", "core.fsmonitor=false", "core.untrackedCache=false",
    "core.sshCommand=false", "core.pager=cat", "core.editor=false", "core.askPass=/bin/false",
    "core.attributesFile=/dev/null", "core.excludesFile=/dev/null",
    "diff.external=", "commit.gpgSign=false", "tag.gpgSign=false", "push.gpgSign=false",
    "credential.helper=", "protocol.ext.allow=never", "protocol.ssh.allow=never",
    "protocol.git.allow=never", "submodule.recurse=false", "uploadpack.packObjectsHook=",
    "gc.auto=0", "maintenance.auto=false",
)
PINNED_ARGS = tuple(arg for setting in PINNED for arg in ("-c", setting))
# For diff-like commands: no external diff program and no textconv filter.
NO_DRIVERS = ("--no-ext-diff", "--no-textconv")


async def git(*args: str, cwd: Path | None = None, token: str | None = None,
              env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run git with a clean environment and pinned settings; stdout, or ``GitError``."""
    out = await git_bytes(*args, cwd=cwd, token=token, env=env, timeout=timeout)
    return out.decode(errors="replace")


async def git_bytes(*args: str, cwd: Path | None = None, token: str | None = None,
                    env: dict[str, str] | None = None, timeout: float = 600) -> bytes:
    """``git``, with stdout as git wrote it (file names that are not UTF-8 stay whole)."""
    proc = await asyncio.create_subprocess_exec(
        "git", *PINNED_ARGS, *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env={**BASE_ENV, **auth_env(token), **(env or {})})
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        raise GitError(redact(f"git {args[0]} failed: {err.decode(errors='replace').strip()}"))
    return out


@dataclass(frozen=True)
class Checkout:
    """A job's trusted git directory and the work tree the sandbox edits.

    Git never discovers a repository from the work tree: each command names both paths, so
    a ``.git`` the agent plants there is only a file like any other.
    """

    git_dir: Path
    work_tree: Path

    async def git(self, *args: str, token: str | None = None, timeout: float = 600) -> str:
        return await git(f"--git-dir={self.git_dir}", f"--work-tree={self.work_tree}", *args,
                         token=token, timeout=timeout, cwd=self.git_dir)

    async def git_bytes(self, *args: str) -> bytes:
        return await git_bytes(f"--git-dir={self.git_dir}", f"--work-tree={self.work_tree}",
                               *args, cwd=self.git_dir)

    async def rev(self, ref: str) -> str:
        return (await self.git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")).strip()

    async def read_blob(self, rev: str, path: str) -> str | None:
        """A regular file's text at ``rev`` from git objects, or None if it is absent or
        anything else (a symlink's target, a directory, a submodule)."""
        listing = await self.git("ls-tree", "-z", rev, "--", path)
        entry = listing.split("\0")[0]
        if not entry:
            return None
        mode, kind, rest = entry.split(" ", 2)
        if kind != "blob" or mode not in ("100644", "100755"):
            return None
        return await self.git("cat-file", "blob", rest.split("\t", 1)[0])
