"""Container engine backend: one Podman or Docker container per job, commands run with exec."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import uuid
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

LABEL = "handoff.sandbox"
# Runs the command under `timeout` (its own process group; stdin passed on explicitly, as
# background jobs otherwise read /dev/null), then kills whatever the command
# left behind in that group, so a stray background process or a fork bomb cannot outlive it.
REAPER = (
    'timeout -s KILL {timeout} bash -c "$0" <&0 & p=$!; wait $p; rc=$?; '
    "for _ in $(seq 50); do kill -9 -- -$p 2>/dev/null || break; done; exit $rc"
)


def _chown_tree(path: Path, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, uid)
    os.chown(path, uid, uid)


class ContainerSandbox:
    """A running container around one workspace."""

    def __init__(self, backend: ContainerBackend, name: str) -> None:
        self.backend, self.name = backend, name
        self.oom_seen = 0

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None, env: dict[str, str] | None = None
                   ) -> CommandResult:
        """Run a shell command in the workspace; killed inside the container at the timeout.

        ``env`` values travel in the engine's environment (``--env NAME``), never its argv.
        """
        limits = self.backend.limits
        timeout = timeout or limits.timeout
        argv = [self.backend.cli, "exec", "-i", "--user", self.backend.user, "--workdir", WORKDIR]
        for name in env or {}:
            argv += ["--env", name]
        argv += [self.name, "bash", "-c", REAPER.format(timeout=f"{timeout:.0f}"), command]
        host_env = {**os.environ, **env} if env else None
        # The host-side bound is a backstop in case the engine itself hangs.
        result = await run_capped(argv, timeout + 15, limits.output_cap, stdin, host_env)
        if result.exit_code == 137 and not result.timed_out:
            if result.duration >= timeout - 0.5:
                result.timed_out = True
            else:
                result.oom_killed = await self._oom_happened()
        return result

    async def _oom_happened(self) -> bool:
        probe = await run_capped(
            [self.backend.cli, "exec", self.name, "cat", "/sys/fs/cgroup/memory.events",
             "/sys/fs/cgroup/memory/memory.oom_control"], 15, 4096)
        counts = [int(n) for n in re.findall(r"^oom_kill (\d+)", probe.stdout, re.M)]
        total = max(counts, default=0)
        happened, self.oom_seen = total > self.oom_seen, total
        return happened

    async def disable_network(self) -> None:
        """Cut the container off from every network before untrusted work starts."""
        inspect = await run_capped([self.backend.cli, "inspect", "--format",
                                    "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                                    self.name], 30, 4096)
        for network in inspect.stdout.split():
            done = await run_capped([self.backend.cli, "network", "disconnect", network,
                                     self.name], 30, 4096)
            if done.exit_code != 0:
                raise SandboxError(f"could not turn the network off: {done.stderr.strip()}")

    async def close(self) -> None:
        await run_capped([self.backend.cli, "rm", "-f", "-t", "0", self.name], 60, 4096)


class ContainerBackend:
    """Podman or Docker through their (identical) command lines."""

    def __init__(self, engine: str = "podman", image: str = "handoff-sandbox:dev",
                 limits: Limits | None = None) -> None:
        cli = shutil.which(engine)
        if cli is None:
            raise SandboxError(f"{engine} is not installed or not on PATH")
        self.name, self.cli, self.image = engine, cli, image
        self.limits = limits or Limits()
        self.host = socket.gethostname()
        self.user = f"{SANDBOX_UID}:{SANDBOX_UID}" if os.geteuid() == 0 else \
            f"{os.getuid()}:{os.getgid()}"

    def supports(self, feature: str) -> bool:
        return feature in {"memory", "pids", "network-toggle", "persistent"}

    async def start(self, job_id: int | str, workspace: Path, network: bool = False,
                    image: str | None = None, mounts: Sequence[tuple[Path, str]] = ()
                    ) -> ContainerSandbox:
        """Start the job's container; the workspace is the only host path it sees."""
        if os.geteuid() == 0:  # the sandbox user must own the files it edits
            await asyncio.to_thread(_chown_tree, workspace, SANDBOX_UID)
        name = f"handoff-job-{job_id}-{uuid.uuid4().hex[:6]}"
        lim = self.limits
        argv = [
            self.cli, "run", "-d", "--init", "--name", name,
            "--label", f"{LABEL}=1", "--label", f"handoff.job={job_id}",
            "--label", f"handoff.host={self.host}", "--label", f"handoff.pid={os.getpid()}",
            "--user", self.user, "--workdir", WORKDIR,
            "--cap-drop", "all", "--security-opt", "no-new-privileges", "--read-only",
            "--tmpfs", "/tmp:rw,exec,size=1g", "--memory", f"{lim.memory_mb}m",
            "--memory-swap", f"{lim.memory_mb}m", "--cpus", str(lim.cpus),
            "--pids-limit", str(lim.pids), "--network", "bridge" if network else "none",
            "-v", f"{os.path.abspath(workspace)}:{WORKDIR}:rw",
        ]
        for host, inside in mounts:
            argv += ["-v", f"{os.path.abspath(host)}:{inside}:ro"]
        if self.name == "podman" and os.geteuid() != 0:
            argv += ["--userns", "keep-id"]
        for key, value in SANDBOX_ENV.items():
            argv += ["--env", f"{key}={value}"]
        argv += [image or self.image, "sleep", "infinity"]
        result = await run_capped(argv, 120, 16384)
        if result.exit_code != 0:
            raise SandboxError(f"{self.name} could not start the sandbox: "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return ContainerSandbox(self, name)

    async def cleanup_orphans(self) -> list[str]:
        """Remove containers left by workers on this host that are no longer alive."""
        listing = await run_capped([
            self.cli, "ps", "-a", "--filter", f"label={LABEL}=1", "--filter",
            f"label=handoff.host={self.host}", "--format",
            '{{.Names}} {{index .Labels "handoff.pid"}}'], 60, 1 << 20)
        removed = []
        for line in listing.stdout.splitlines():
            name, _, pid = line.partition(" ")
            if pid.isdigit() and _alive(int(pid)):
                continue
            await run_capped([self.cli, "rm", "-f", "-t", "0", name], 60, 4096)
            removed.append(name)
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["ContainerBackend", "ContainerSandbox"]
