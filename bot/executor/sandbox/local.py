"""A sandbox backend for tests that ISOLATES NOTHING: commands run with bash on the host.

Each command runs as the worker's own user, in the job's work tree on the host, with the
host's network, file system and processes all in reach. Its only purpose is to let the
logic around the sandbox (the job runner, the reporter, the status comment) be tested fast
and without a container engine. Never use it for real work: ``make_backend`` builds it only
when it is chosen by name (``HANDOFF_SANDBOX=local``), it is never the default, and
``handoff doctor`` reports it as a failure.

What it keeps of the real sandboxes: the protocols' signatures, the timeout (the process
group is killed), the output cap (through ``run_capped``), the workspace disk limit, an
egress allowlist that is recorded but never enforced (nothing is refused, so
``egress_denied`` stays empty), and a private ``HOME`` and ``TMPDIR`` per sandbox.

Paths differ from inside a real sandbox: commands run in the work tree's host path, not in
``/workspace``, and read-only ``mounts`` are not shown at their sandbox paths (nothing on
the host is rewritten). For git, ``GIT_ALTERNATE_OBJECT_DIRECTORIES`` names the host path of
every mount whose sandbox path is ``SANDBOX_OBJECTS``, so the agent's ``.git`` (whose
``objects/info/alternates`` names the sandbox path, absent here) still finds the mirror's
objects; git may warn that the sandbox path does not exist.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bot.executor.sandbox.base import (
    CommandResult,
    LeaseCheck,
    Limits,
    SandboxError,
    disk_guard,
    run_capped,
)
from bot.executor.workspace import SANDBOX_OBJECTS

LOCAL_ENV = {
    "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
    # The host's pytest plugins are the worker's own dev tools (coverage, benchmarks), not the
    # repository's, and a sandbox image has none: left out, pytest also starts 5x faster.
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
}
RUN = 'cd -- "$1" || exit 125; exec bash -c "$0"'  # $0: the command, $1: the work tree


class LocalSandbox:
    """One job's commands run by host bash in its work tree. Isolates nothing."""

    def __init__(self, backend: LocalBackend, workspace: Path, home: Path,
                 mounts: Sequence[tuple[Path, str]] = (), egress: list[str] | None = None
                 ) -> None:
        self.backend, self.workspace, self.home = backend, workspace.resolve(), home
        self.mounts = [(host.resolve(), inside) for host, inside in mounts]
        self.allow: list[str] = list(egress or [])  # recorded, never enforced
        self.commands: list[str] = []  # every command run, first first (for tests)
        self.lock = asyncio.Lock()
        self.closed = False
        self._limit_hit: CommandResult | None = None

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The host's PATH, a private HOME and TMPDIR, the mirror's objects for git, and
        ``extra``; none of the worker's other variables (its secrets among them)."""
        env = {**LOCAL_ENV, "PATH": os.environ.get("PATH", os.defpath),
               "HOME": str(self.home), "TMPDIR": str(self.home)}
        objects = [str(host) for host, inside in self.mounts if inside == SANDBOX_OBJECTS]
        if objects:
            env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = os.pathsep.join(objects)
        return {**env, **(extra or {})}

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None, env: dict[str, str] | None = None
                   ) -> CommandResult:
        if self.closed:
            raise SandboxError("the local sandbox is closed")
        limits = self.backend.limits
        timeout = timeout or limits.timeout
        async with self.lock:
            if self._limit_hit is not None:
                return self._limit_hit
            self.commands.append(command)
            result = await run_capped(["bash", "-c", RUN, command, str(self.workspace)],
                                      timeout, limits.output_cap, stdin,
                                      self.environment(env),
                                      guard=disk_guard(self.workspace, limits.workspace_mb))
            if result.limit:
                self._limit_hit = result
            return result

    async def set_egress(self, allow: list[str]) -> None:
        self.allow = list(allow)

    @property
    def egress_denied(self) -> list[str]:
        return []  # there is no proxy: nothing is refused

    @property
    def egress_refusals(self) -> dict[str, list[str]]:
        return {}

    @property
    def limit_hit(self) -> CommandResult | None:
        return self._limit_hit

    async def close(self) -> None:
        self.closed = True
        self.backend.live.discard(self)
        await asyncio.to_thread(shutil.rmtree, self.home, True)


class LocalBackend:
    """Starts ``LocalSandbox``es: for tests only, as they isolate nothing (see the module)."""

    name = "local"

    def __init__(self, limits: Limits | None = None) -> None:
        if shutil.which("bash") is None:
            raise SandboxError("the local sandbox needs bash on PATH")
        self.limits = limits or Limits()
        self.live: set[LocalSandbox] = set()
        self.started: list[LocalSandbox] = []  # every sandbox, first first (for tests)

    def supports(self, feature: str) -> bool:
        return feature in {"disk-limit", "warm"}

    async def close(self) -> None:
        """Nothing is held between sandboxes."""

    async def start(self, job_id: int | str, workspace: Path, egress: list[str] | None = None,
                    image: str | None = None, owner: str = "",
                    mounts: Sequence[tuple[Path, str]] = ()) -> LocalSandbox:
        """A sandbox around ``workspace``; ``image`` and ``owner`` mean nothing here."""
        if not workspace.is_dir():
            raise SandboxError(f"the work tree {workspace} does not exist")
        home = Path(tempfile.mkdtemp(prefix=f"handoff-local-{job_id}-"))
        box = LocalSandbox(self, workspace, home, mounts, egress)
        self.live.add(box)
        self.started.append(box)
        return box

    async def cleanup_orphans(self, held: LeaseCheck | None = None) -> list[str]:
        """Nothing to find: there are no containers or cgroups. (A process a command left
        running in the background is not tracked; tests should not leave any.)"""
        return []


__all__ = ["LocalBackend", "LocalSandbox"]
