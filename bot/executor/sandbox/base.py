"""The sandbox interface every backend implements, and the capped process runner they share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot.config import default

if TYPE_CHECKING:
    from bot.executor.sandbox.egress import EgressProxy

WORKDIR = "/workspace"
SANDBOX_UID = 1000
PROCESS_ID = uuid.uuid4().hex[:12]  # labels this process's sandboxes; a new replica has another
PIPE_GRACE = 0.5  # seconds to finish reading output once the process has ended
SANDBOX_ENV = {
    "HOME": "/tmp",
    # HOME/.local/bin: where `pip install --user` (the default for a non-root user) puts scripts.
    "PATH": "/tmp/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox (by default the settings' defaults)."""

    memory_mb: int = default("sandbox_memory_mb")
    cpus: float = default("sandbox_cpus")
    pids: int = default("sandbox_pids")
    timeout: float = default("command_timeout")
    output_cap: int = default("output_cap_bytes")
    workspace_mb: int = default("workspace_max_mb")  # a command growing it past this is killed

    @property
    def tmp_mb(self) -> int:
        """Size of the sandbox's /tmp: a quarter of its memory (tmpfs pages are memory)."""
        return max(16, self.memory_mb // 4)


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
    limit: str = ""  # a limit that killed the command ("disk-limit"), with ``limit_detail``
    limit_detail: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.limit

    def describe(self) -> str:
        """One line a person or a model can read."""
        if self.limit:
            return f"killed: {self.limit_detail or self.limit}"
        if self.timed_out:
            return f"killed after {self.duration:.0f}s: over the time limit"
        if self.oom_killed:
            return "killed: out of memory (over the sandbox's memory limit)"
        return f"exit code {self.exit_code}"


class GuardedSandbox:
    """What every backend's sandbox keeps: its egress proxy (whose allowlist changes between
    phases and which records refused hosts) and the resource limit a command ran into."""

    proxy: EgressProxy
    _limit_hit: CommandResult | None = None

    @property
    def egress_denied(self) -> list[str]:
        return self.proxy.refused

    @property
    def egress_refusals(self) -> dict[str, list[str]]:
        return self.proxy.refused_by_kind

    @property
    def limit_hit(self) -> CommandResult | None:
        return self._limit_hit

    async def set_egress(self, allow: list[str]) -> None:
        await self.proxy.set_allow(allow)


class SandboxError(Exception):
    """The sandbox could not be started or used."""


class Sandbox(Protocol):
    """A started sandbox around one workspace."""

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None, env: dict[str, str] | None = None
                   ) -> CommandResult: ...

    async def set_egress(self, allow: list[str]) -> None:
        """Hosts later commands may reach through the egress proxy; [] is no network."""
        ...

    @property
    def egress_denied(self) -> list[str]:
        """``host:port`` the proxy refused so far, first refusal first (plain names only, at
        most 20; a last line counts the rest)."""
        ...

    @property
    def egress_refusals(self) -> dict[str, list[str]]:
        """``egress_denied`` grouped by why it was refused (``EgressProxy.refused_by_kind``)."""
        ...

    @property
    def limit_hit(self) -> CommandResult | None:
        """The command a hard limit (the workspace size) stopped; the sandbox runs no more."""
        ...

    async def close(self) -> None: ...


LeaseCheck = Callable[[str, str], Awaitable[bool]]  # (job id, owner) -> is the lease held?
Guard = Callable[[], Awaitable[tuple[str, str] | None]]  # -> (limit, detail) to kill


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def chown_tree(path: Path, uid: int) -> None:
    """Give a work tree to the sandbox user without ever following a symlink: each folder
    is opened from its parent's descriptor with ``O_NOFOLLOW``, so a folder swapped for a
    link to a host folder is changed as a link, never walked."""
    top = os.open(path, DIR_FLAGS)
    os.chown(top, uid, uid)
    stack: list[tuple[int, list[tuple[str, bool]]]] = [(top, _entries(top))]
    try:
        while stack:
            fd, pending = stack[-1]
            if not pending:
                os.close(stack.pop()[0])
                continue
            name, is_dir = pending.pop()
            with contextlib.suppress(FileNotFoundError):
                os.chown(name, uid, uid, dir_fd=fd, follow_symlinks=False)
            if is_dir:
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # gone, or no longer a folder (ELOOP: now a link)
                stack.append((child, _entries(child)))
    finally:
        for fd, _ in stack:
            os.close(fd)


def _entries(fd: int) -> list[tuple[str, bool]]:
    with os.scandir(fd) as entries:
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]


def tree_size(path: Path) -> int:
    """Bytes a directory tree uses on disk (blocks, so sparse files count as what they use)."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def disk_guard(workspace: Path, limit_mb: int) -> Guard:
    """A guard that trips when the workspace grows past ``limit_mb``."""

    async def check() -> tuple[str, str] | None:
        used = await asyncio.to_thread(tree_size, workspace)
        if used > limit_mb * 1024 * 1024:
            return ("disk-limit", f"the workspace grew to {used // (1024 * 1024)} MB, past its "
                    f"{limit_mb} MB disk limit")
        return None

    return check


class Backend(Protocol):
    """Starts sandboxes and cleans up after crashed workers."""

    name: str
    limits: Limits

    async def start(self, job_id: int | str, workspace: Path, egress: list[str] | None = None,
                    image: str | None = None, owner: str = "",
                    mounts: Sequence[tuple[Path, str]] = ()) -> Sandbox:
        """Start a sandbox around ``workspace``; ``image`` overrides the default image;
        ``mounts`` are host paths shown read-only at the given sandbox paths.

        ``egress`` is the first allowlist (see ``set_egress``); ``owner`` is the lease owner
        of the job, so a reaper can tell when nobody holds the job any more.
        """
        ...

    async def cleanup_orphans(self, held: LeaseCheck | None = None) -> list[str]: ...

    def supports(self, feature: str) -> bool: ...

    async def close(self) -> None:
        """Release what the backend holds between sandboxes (its API client's connections);
        called once, when the worker stops."""
        ...


async def _drain(stream: asyncio.StreamReader, cap: int, out: bytearray) -> int:
    """Read a stream to its end, keeping at most ``cap`` bytes; returns bytes dropped."""
    dropped = 0
    while chunk := await stream.read(65536):
        room = cap - len(out)
        if room > 0:
            out += chunk[:room]
        dropped += max(0, len(chunk) - max(room, 0))
    return dropped


async def _watch(proc: asyncio.subprocess.Process, guard: Guard,
                 kill: Callable[[], Awaitable[None]] | None) -> tuple[str, str] | None:
    """Poll ``guard`` while the process runs; on a trip kill it (and ``kill`` the rest)."""
    interval = 0.25
    await asyncio.sleep(interval)  # most commands end sooner: the check after them suffices
    while proc.returncode is None:
        started = time.monotonic()
        tripped = await guard()
        if tripped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if kill is not None:
                await kill()
            return tripped
        # A big tree takes long to measure: never spend more than a fifth of the time on it.
        await asyncio.sleep(max(interval, 4 * (time.monotonic() - started)))
    return None


async def run_capped(argv: list[str], timeout: float, cap: int, stdin: bytes | None = None,
                     env: dict[str, str] | None = None, guard: Guard | None = None,
                     kill: Callable[[], Awaitable[None]] | None = None,
                     pass_fds: tuple[int, ...] = ()) -> CommandResult:
    """Run a process with a wall-clock timeout and an output cap on stdout and stderr.

    ``guard`` is polled while it runs; when it names a limit, the process group is killed,
    then ``kill`` runs (for processes outside the group, e.g. inside a container)."""
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        env=env, pass_fds=pass_fds,
        # Not the caller's directory: conmon leaves an `oom` file in its working directory
        # when an exec'd command is OOM-killed.
        cwd=tempfile.gettempdir())
    out, err = bytearray(), bytearray()
    assert proc.stdout and proc.stderr
    readers = asyncio.gather(_drain(proc.stdout, cap, out), _drain(proc.stderr, cap, err))
    if stdin is not None and proc.stdin:
        proc.stdin.write(stdin)
        await proc.stdin.drain()
        proc.stdin.close()
    timed_out = False
    watcher = asyncio.ensure_future(_watch(proc, guard, kill)) if guard else None
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = await proc.wait()
    except asyncio.CancelledError:  # the job stops (hand-back, /cancel): so does the command
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for task in (readers, watcher):
            if task is not None:
                task.cancel()
                task.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise
    tripped = None
    if watcher is not None:
        if watcher.done():
            tripped = watcher.result()
        else:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if tripped is None and guard is not None:  # grown in the last moments
            tripped = await guard()
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
        duration=time.monotonic() - start, limit=tripped[0] if tripped else "",
        limit_detail=tripped[1] if tripped else "")
