"""bubblewrap backend for hosts without a container engine: namespaces per command."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from bot.sandbox.base import (
    SANDBOX_ENV,
    SANDBOX_UID,
    WORKDIR,
    CommandResult,
    Limits,
    SandboxError,
    run_capped,
)

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/passwd", "/etc/group", "/etc/ssl", "/etc/ca-certificates",
             "/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime", "/etc/gitconfig")


class BubblewrapSandbox:
    """Each command runs in fresh namespaces with the workspace as the only writable path."""

    def __init__(self, backend: BubblewrapBackend, workspace: Path, network: bool,
                 mounts: Sequence[tuple[Path, str]] = ()) -> None:
        self.backend, self.workspace, self.network = backend, workspace.resolve(), network
        self.mounts = list(mounts)

    def argv(self, command: str, timeout: float) -> list[str]:
        argv = [self.backend.bwrap, "--unshare-all", "--die-with-parent", "--new-session",
                "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        if self.network:
            argv.append("--share-net")
        for path in SYSTEM_DIRS + ETC_FILES:
            if os.path.exists(path):
                argv += ["--ro-bind", path, path]
        if self.network and os.path.exists("/etc/resolv.conf"):
            argv += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
        argv += ["--bind", str(self.workspace), WORKDIR, "--chdir", WORKDIR]
        for host, inside in self.mounts:
            argv += ["--ro-bind", str(host), inside]
        # Memory as an address-space limit: allocations fail rather than the kernel killing.
        limit_kb = self.backend.limits.memory_mb * 1024
        script = f"ulimit -v {limit_kb}; exec timeout -s KILL {timeout:.0f} bash -c \"$0\""
        return [*argv, "bash", "-c", script, command]

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None, env: dict[str, str] | None = None
                   ) -> CommandResult:
        timeout = timeout or self.backend.limits.timeout
        # bwrap runs with only the sandbox's environment (it is PID 1 inside, and /proc shows
        # it), and passes that on; extra variables ride along the same way, never in argv.
        result = await run_capped(self.argv(command, timeout), timeout + 10,
                                  self.backend.limits.output_cap, stdin,
                                  {**SANDBOX_ENV, **(env or {})})
        if result.exit_code == 137 and result.duration >= timeout - 0.5:
            result.timed_out = True
        return result

    async def disable_network(self) -> None:
        self.network = False

    async def close(self) -> None:
        return None


class BubblewrapBackend:
    """Sandboxes made of Linux namespaces through ``bwrap``."""

    name = "bubblewrap"

    def __init__(self, limits: Limits | None = None) -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError("bwrap is not installed (apt-get install bubblewrap)")
        self.bwrap = bwrap
        self.limits = limits or Limits()

    def supports(self, feature: str) -> bool:
        # No cgroups here: no pids limit, and memory is an address-space cap, not an OOM kill.
        return feature in {"network-toggle"}

    async def start(self, job_id: int | str, workspace: Path, network: bool = False,
                    image: str | None = None, mounts: Sequence[tuple[Path, str]] = ()
                    ) -> BubblewrapSandbox:
        # No images here: the host's own system directories are the sandbox's root.
        return BubblewrapSandbox(self, workspace, network, mounts)

    async def cleanup_orphans(self) -> list[str]:
        return []  # --die-with-parent: nothing outlives its worker
