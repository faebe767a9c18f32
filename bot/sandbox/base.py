"""The sandbox interface every backend implements, and the capped process runner they share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

WORKDIR = "/workspace"
SANDBOX_UID = 1000
PIPE_GRACE = 0.5  # seconds to finish reading output once the process has ended
SANDBOX_ENV = {
    "HOME": "/tmp",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox."""

    memory_mb: int = 2048
    cpus: float = 2.0
    pids: int = 512
    timeout: float = 600.0
    output_cap: int = 64 * 1024


@dataclass
class CommandResult:
    """How one command in a sandbox ended."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    oom_killed: bool = False
    truncated: bool = False
    cut_bytes: int = 0
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One line a person or a model can read."""
        if self.timed_out:
            return f"killed after {self.duration:.0f}s: over the time limit"
        if self.oom_killed:
            return "killed: out of memory (over the sandbox's memory limit)"
        return f"exit code {self.exit_code}"


class SandboxError(Exception):
    """The sandbox could not be started or used."""


class Sandbox(Protocol):
    """A started sandbox around one workspace."""

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None, env: dict[str, str] | None = None
                   ) -> CommandResult: ...

    async def disable_network(self) -> None: ...

    async def close(self) -> None: ...


class Backend(Protocol):
    """Starts sandboxes and cleans up after crashed workers."""

    name: str
    limits: Limits

    async def start(self, job_id: int | str, workspace: Path, network: bool = False,
                    image: str | None = None, mounts: Sequence[tuple[Path, str]] = ()
                    ) -> Sandbox:
        """Start a sandbox around ``workspace``; ``image`` overrides the default image;
        ``mounts`` are host paths shown read-only at the given sandbox paths."""
        ...

    async def cleanup_orphans(self) -> list[str]: ...

    def supports(self, feature: str) -> bool: ...


async def _drain(stream: asyncio.StreamReader, cap: int, out: bytearray) -> int:
    """Read a stream to its end, keeping at most ``cap`` bytes; returns bytes dropped."""
    dropped = 0
    while chunk := await stream.read(65536):
        room = cap - len(out)
        if room > 0:
            out += chunk[:room]
        dropped += max(0, len(chunk) - max(room, 0))
    return dropped


async def run_capped(argv: list[str], timeout: float, cap: int, stdin: bytes | None = None,
                     env: dict[str, str] | None = None) -> CommandResult:
    """Run a process with a wall-clock timeout and an output cap on stdout and stderr."""
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        env=env)
    out, err = bytearray(), bytearray()
    assert proc.stdout and proc.stderr
    readers = asyncio.gather(_drain(proc.stdout, cap, out), _drain(proc.stderr, cap, err))
    if stdin is not None and proc.stdin:
        proc.stdin.write(stdin)
        await proc.stdin.drain()
        proc.stdin.close()
    timed_out = False
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = await proc.wait()
    try:
        # A daemonizing child (``podman run -d`` starts conmon) may hold the pipes open after
        # the process ends: read what is there, but do not wait for an EOF that never comes.
        dropped = sum(await asyncio.wait_for(asyncio.shield(readers), PIPE_GRACE))
    except TimeoutError:
        readers.cancel()
        # Not awaited: that could swallow a cancellation meant for the caller.
        readers.add_done_callback(lambda f: f.cancelled() or f.exception())
        dropped = 0
    return CommandResult(
        exit_code=code, stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        timed_out=timed_out, truncated=dropped > 0, cut_bytes=dropped,
        duration=time.monotonic() - start)
