"""Git on the worker's side: token auth through the environment, never the command line."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

from bot.logs import redact


class GitError(Exception):
    """A git command failed; the message holds git's own words (with secrets redacted)."""


def auth_env(token: str | None) -> dict[str, str]:
    """Environment that makes git send the token as a header, seen in no argv and no file."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
    return env


BASE_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "LANG": "C",
}


async def git(*args: str, cwd: Path | None = None, token: str | None = None,
              env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run git with a clean environment; returns stdout or raises ``GitError``."""
    proc = await asyncio.create_subprocess_exec(
        "git", "-c", "safe.directory=*", "-c", "core.hooksPath=/dev/null", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**BASE_ENV, **auth_env(token), **(env or {})})
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        raise GitError(redact(f"git {args[0]} failed: {err.decode(errors='replace').strip()}"))
    return out.decode(errors="replace")
