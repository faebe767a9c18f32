"""bubblewrap backend for hosts without a container engine: namespaces per command.

Every command runs in fresh namespaces (no network interface but loopback, its own pid
namespace), inside the sandbox's own cgroup (memory, pids and CPU limits), as an
unprivileged host uid even when the worker is root, with nested user namespaces disabled.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from bot import metrics
from bot.executor.sandbox.base import (
    SANDBOX_ENV,
    SANDBOX_UID,
    WORKDIR,
    CommandResult,
    GuardedSandbox,
    LeaseCheck,
    Limits,
    SandboxError,
    chown_tree,
    disk_guard,
    run_capped,
)
from bot.executor.sandbox.cgroup import Cgroup, stale_groups
from bot.executor.sandbox.egress import MOUNT, RELAY_NAME, SOCKET_NAME, EgressProxy

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/passwd", "/etc/group", "/etc/ssl", "/etc/ca-certificates",
             "/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime", "/etc/gitconfig")


def egress_command(command: str) -> str:
    """``command`` run beside the relay to the egress proxy, with the proxy variables set."""
    return (f"exec python3 {MOUNT}/{RELAY_NAME} {MOUNT}/{SOCKET_NAME} bash -c "
            f"{shlex.quote(command)}")


class BubblewrapSandbox(GuardedSandbox):
    """Each command runs in fresh namespaces with the workspace as the only writable path."""

    def __init__(self, backend: BubblewrapBackend, workspace: Path, cgroup: Cgroup,
                 proxy: EgressProxy, runtime: Path, mounts: Sequence[tuple[Path, str]] = ()
                 ) -> None:
        self.backend, self.workspace, self.runtime = backend, workspace.resolve(), runtime
        self.mounts = [(host.resolve(), inside) for host, inside in mounts]
        self.cgroup, self.proxy = cgroup, proxy
        self.lock = asyncio.Lock()
        self.oom_seen = 0
        self._limit_hit: CommandResult | None = None

    def argv(self, command: str, timeout: float) -> list[str]:
        """The command line: cgroup first; as root, a private mount namespace where the
        workspace is bound into a folder the sandbox user can reach (its parents may be
        private), then down to the sandbox user, then bwrap."""
        b = self.backend
        argv = [b.bwrap, "--unshare-all", "--unshare-user", *b.userns_flags,
                "--die-with-parent", "--new-session",
                "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                "--proc", "/proc", "--dev", "/dev",
                "--size", str(b.limits.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp"]
        for path in SYSTEM_DIRS + ETC_FILES:
            if os.path.exists(path):
                argv += ["--ro-bind", path, path]
        if self.proxy.active:
            argv += ["--ro-bind", str(self.proxy.directory), MOUNT]
            command = egress_command(command)
        root = os.geteuid() == 0
        # As root, each host path is first bound where the sandbox user can reach it.
        binds = [(self.workspace, self.runtime / "ws"),
                 *((host, self.runtime / f"m{i}") for i, (host, _) in enumerate(self.mounts))]
        source = binds[0][1] if root else self.workspace
        argv += ["--bind", str(source), WORKDIR, "--chdir", WORKDIR]
        for (host, reachable), (_, inside) in zip(binds[1:], self.mounts, strict=True):
            argv += ["--ro-bind", str(reachable if root else host), inside]
        script = f"exec timeout -s KILL {timeout:.0f} bash -c \"$0\""
        inner = [*argv, "bash", "-c", script, command]
        if root:  # never host root: bwrap itself runs as the sandbox user
            pairs = [str(p) for pair in binds for p in pair]
            inner = [b.unshare, "--mount", "--propagation", "private", "/bin/sh", "-c",
                     'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; '
                     'done; shift; exec "$@"', "sh", *pairs, "--", b.setpriv, "--reuid",
                     str(SANDBOX_UID), "--regid", str(SANDBOX_UID), "--clear-groups", "--",
                     *inner]
        return self.cgroup.enter(inner)

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None, env: dict[str, str] | None = None
                   ) -> CommandResult:
        timeout = timeout or self.backend.limits.timeout
        async with self.lock:
            if self._limit_hit is not None:
                return self._limit_hit
            # bwrap runs with only the sandbox's environment (it is PID 1 inside, and
            # /proc shows it), and passes that on; extra variables ride along the same way.
            result = await run_capped(
                self.argv(command, timeout), timeout + 10,
                self.backend.limits.output_cap, stdin, {**SANDBOX_ENV, **(env or {})},
                guard=disk_guard(self.workspace, self.backend.limits.workspace_mb),
                kill=lambda: asyncio.to_thread(self.cgroup.kill_all))
            await asyncio.to_thread(self.cgroup.kill_all)  # nothing outlives its command
            await self.proxy.sync()
            ooms = self.cgroup.oom_kills()
            if ooms > self.oom_seen:
                self.oom_seen = ooms
                result.oom_killed = result.exit_code != 0
            if result.exit_code == 137 and result.duration >= timeout - 0.5:
                result.timed_out = True
            if result.limit:
                self._limit_hit = result
            return result

    async def close(self) -> None:
        if self.runtime.exists():
            metrics.SANDBOXES.labels("bubblewrap").dec()
        await asyncio.to_thread(self.cgroup.remove)
        await self.proxy.close()
        shutil.rmtree(self.runtime, ignore_errors=True)


class BubblewrapBackend:
    """Sandboxes made of Linux namespaces through ``bwrap``, each in its own cgroup."""

    name = "bubblewrap"

    def __init__(self, limits: Limits | None = None, allow_private: bool = False,
                 upstream_proxy: str = "") -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError("bwrap is not installed (apt-get install bubblewrap)")
        self.bwrap = bwrap
        self.setpriv = shutil.which("setpriv") or "setpriv"
        self.unshare = shutil.which("unshare") or "unshare"
        self.limits = limits or Limits()
        self.allow_private = allow_private
        self.upstream_proxy = upstream_proxy
        self.deployment = ""
        usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True).stdout
        # bwrap >= 0.8: the sandbox cannot make user namespaces of its own (unshare -Ur).
        self.userns_flags = ["--disable-userns"] if "--disable-userns" in usage else []

    def supports(self, feature: str) -> bool:
        return feature in {"memory", "pids", "egress", "disk-limit", "warm"}

    async def close(self) -> None:
        """Nothing is held between sandboxes."""

    async def start(self, job_id: int | str, workspace: Path, egress: list[str] | None = None,
                    image: str | None = None, owner: str = "",
                    mounts: Sequence[tuple[Path, str]] = ()) -> BubblewrapSandbox:
        # No images here: the host's own system directories are the sandbox's root.
        if os.geteuid() == 0 and not (shutil.which("setpriv") and shutil.which("unshare")):
            raise SandboxError("bubblewrap as root needs setpriv and unshare (util-linux) to "
                               f"drop to uid {SANDBOX_UID}")
        name = f"{os.getpid()}-{job_id}-{uuid.uuid4().hex[:6]}"
        cgroup = await asyncio.to_thread(Cgroup.create, name, self.limits)
        try:
            if os.geteuid() == 0:  # the sandbox user must own the files it edits
                await asyncio.to_thread(chown_tree, workspace, SANDBOX_UID)
            proxy = await EgressProxy.create("handoff-egress-", self.allow_private,
                                             upstream=self.upstream_proxy)
        except BaseException:
            await asyncio.to_thread(cgroup.remove)
            raise
        try:
            await proxy.set_allow(egress or [])
        except BaseException:
            await asyncio.to_thread(cgroup.remove)
            await proxy.close()
            raise
        runtime = Path(tempfile.mkdtemp(prefix="handoff-bwrap-"))
        runtime.chmod(0o755)
        for folder in ["ws", *(f"m{i}" for i in range(len(mounts)))]:
            (runtime / folder).mkdir()
        metrics.SANDBOXES.labels("bubblewrap").inc()
        return BubblewrapSandbox(self, workspace, cgroup, proxy, runtime, mounts)

    async def cleanup_orphans(self, held: LeaseCheck | None = None) -> list[str]:
        """Processes die with their worker (--die-with-parent); their cgroups are removed."""
        removed = []
        for folder in await asyncio.to_thread(stale_groups):
            await asyncio.to_thread(Cgroup([folder], v2=False).remove)
            removed.append(str(folder))
        return removed
