"""Container engine backend: one Podman or Docker container per job, commands run with exec."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from bot import metrics
from bot.executor.sandbox.base import (
    PROCESS_ID,
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
from bot.executor.sandbox.bubblewrap import egress_command
from bot.executor.sandbox.egress import MOUNT, EgressProxy

LABEL = "handoff.sandbox"
ENGINE_NICENESS = 10
# Kills every process in the container but PID 1 (the init), the keeper (`sleep infinity`,
# its pid KEEPER found at start) and the shell running this, again until none is left:
# `setsid`, `nohup` or a double fork cannot carry a process from one command into the next.
KILL_OTHERS = (
    "for _ in 1 2 3 4 5 6 7 8 9 10; do n=0; for d in /proc/[0-9]*; do q=${d#/proc/}; "
    '[ "$q" != 1 ] && [ "$q" != KEEPER ] && [ "$q" != $$ ] && '
    'kill -9 "$q" 2>/dev/null && n=1; done; '
    '[ $n = 0 ] && break; done'
)
# Clears the container, runs the command under `timeout` (stdin passed on explicitly, as
# background jobs otherwise read /dev/null), then kills whatever the command left behind.
REAPER = (
    KILL_OTHERS + '; timeout -s KILL TIMEOUT bash -c "$0" <&0 & p=$!; wait $p; rc=$?; '
    + KILL_OTHERS + "; exit $rc"
)
LIVE: set[str] = set()  # containers this process started and has not closed (all backends)
FIELDS = ["handoff.pid", "handoff.host", "handoff.job", "handoff.owner", "handoff.process",
          "handoff.deployment"]


CLONE_NEWUSER = 0x10000000
DEFAULT_SECCOMP = Path("/usr/share/containers/seccomp.json")


def no_userns_profile(source: Path = DEFAULT_SECCOMP) -> Path | None:
    """The engine's default seccomp profile, but `unshare`/`clone` may not make a user
    namespace (no `unshare -Ur` root inside) and `clone3` is refused (libc falls back to
    clone). None when there is no default profile to start from."""
    try:
        profile = json.loads(source.read_text())
    except (OSError, ValueError):
        return None
    guarded = {"clone", "clone3", "unshare"}
    for rule in profile.get("syscalls", []):
        if rule.get("action") == "SCMP_ACT_ALLOW" and not rule.get("args"):
            rule["names"] = [n for n in rule["names"] if n not in guarded]
    mask = {"index": 0, "value": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}
    profile["syscalls"] += [
        {"names": ["clone", "unshare"], "action": "SCMP_ACT_ALLOW",
         "args": [{**mask, "valueTwo": 0}]},
        {"names": ["clone", "unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "args": [{**mask, "valueTwo": CLONE_NEWUSER}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ]
    path = Path(tempfile.gettempdir()) / f"handoff-seccomp-{os.getuid()}.json"
    tmp = path.with_suffix(f".{os.getpid()}")
    tmp.write_text(json.dumps(profile))
    tmp.replace(path)
    return path


def remote_engine() -> bool:
    """Whether ``podman`` asks a Podman service (CONTAINER_HOST, as deploy/compose.yml's
    worker does) rather than running containers itself. The service there is rootful: the
    sandbox runs as the worker's own uid with no user namespace to keep it in."""
    return bool(os.environ.get("CONTAINER_HOST") or os.environ.get("CONTAINER_CONNECTION"))


class ContainerSandbox(GuardedSandbox):
    """A running container around one workspace."""

    def __init__(self, backend: ContainerBackend, name: str, workspace: Path,
                 proxy: EgressProxy) -> None:
        self.backend, self.name, self.workspace, self.proxy = backend, name, workspace, proxy
        self.oom_seen = 0
        self.keeper = "0"
        self.lock = asyncio.Lock()
        self._limit_hit: CommandResult | None = None

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None, env: dict[str, str] | None = None
                   ) -> CommandResult:
        """Run a shell command in the workspace; killed inside the container at the timeout.

        ``env`` values travel in the engine's environment (``--env NAME``), never its argv.
        """
        async with self.lock:
            if self._limit_hit is not None:
                return self._limit_hit
            result = await self._exec(command, timeout, stdin, env)
            if result.limit:
                self._limit_hit = result
            return result

    async def _exec(self, command: str, timeout: float | None, stdin: bytes | None,
                    env: dict[str, str] | None) -> CommandResult:
        limits = self.backend.limits
        timeout = timeout or limits.timeout
        if self.proxy.active:
            command = egress_command(command)
        argv = [*self.backend.engine, "exec", "-i", "--user", self.backend.user,
                "--workdir", WORKDIR]
        for name in env or {}:
            argv += ["--env", name]
        argv += [self.name, "bash", "-c", self.reaper(timeout), command]
        host_env = {**os.environ, **env} if env else None
        # The host-side bound is a backstop in case the engine itself hangs.
        result = await run_capped(argv, timeout + 15, limits.output_cap, stdin, host_env,
                                  guard=disk_guard(self.workspace, limits.workspace_mb),
                                  kill=self._kill_others)
        await self.proxy.sync()
        if result.exit_code == 137 and not result.timed_out:
            if result.duration >= timeout - 0.5:
                result.timed_out = True
            else:
                result.oom_killed = await self._oom_happened()
        return result

    async def _oom_happened(self) -> bool:
        probe = await run_capped(
            [*self.backend.engine, "exec", self.name, "cat", "/sys/fs/cgroup/memory.events",
             "/sys/fs/cgroup/memory/memory.oom_control"], 15, 4096)
        counts = [int(n) for n in re.findall(r"^oom_kill (\d+)", probe.stdout, re.M)]
        total = max(counts, default=0)
        happened, self.oom_seen = total > self.oom_seen, total
        return happened

    def reaper(self, timeout: float) -> str:
        return REAPER.replace("TIMEOUT", f"{timeout:.0f}").replace("KEEPER", self.keeper)

    async def find_keeper(self) -> None:
        """The keeper is the init's only child right after the start."""
        found = await run_capped([*self.backend.engine, "exec", self.name, "cat",
                                  "/proc/1/task/1/children"], 30, 4096)
        children = found.stdout.split()
        if found.exit_code != 0 or len(children) != 1 or not children[0].isdigit():
            raise SandboxError(f"could not find the sandbox's keeper process: "
                               f"{found.stderr.strip() or found.stdout.strip()}")
        self.keeper = children[0]

    async def _kill_others(self) -> None:
        await run_capped([*self.backend.engine, "exec", "--user", self.backend.user, self.name,
                          "bash", "-c", KILL_OTHERS.replace("KEEPER", self.keeper)], 30, 4096)

    async def close(self) -> None:
        await run_capped([*self.backend.engine, "rm", "-f", "-t", "0", self.name], 60, 4096)
        if self.name in self.backend.live:
            metrics.SANDBOXES.labels(self.backend.name).dec()
        self.backend.live.discard(self.name)
        await self.proxy.close()


class ContainerBackend:
    """Podman or Docker through their (identical) command lines."""

    def __init__(self, engine: str = "podman", image: str = "handoff-sandbox:dev",
                 limits: Limits | None = None, allow_private: bool = False,
                 deployment: str = "", upstream_proxy: str = "") -> None:
        cli = shutil.which(engine)
        if cli is None:
            raise SandboxError(f"{engine} is not installed or not on PATH")
        self.name, self.cli, self.image = engine, cli, image
        # The engine's own processes (a Go program per exec, conmon, runc) run at a lower CPU
        # priority than Handoff itself, so a busy worker does not slow the webhook receiver.
        self.engine = [nice, "-n", str(ENGINE_NICENESS), cli] if (nice := shutil.which("nice")) \
            else [cli]
        self.limits = limits or Limits()
        self.allow_private, self.upstream_proxy = allow_private, upstream_proxy
        self.deployment = deployment  # whose store's leases say which containers are wanted
        self.live = LIVE
        self.seccomp = no_userns_profile() if engine == "podman" else None
        self.host = socket.gethostname()
        self.user = f"{SANDBOX_UID}:{SANDBOX_UID}" if os.geteuid() == 0 else \
            f"{os.getuid()}:{os.getgid()}"

    def supports(self, feature: str) -> bool:
        return feature in {"memory", "pids", "persistent", "egress", "disk-limit", "warm"}

    async def close(self) -> None:
        """Nothing is held between sandboxes."""

    async def start(self, job_id: int | str, workspace: Path, egress: list[str] | None = None,
                    image: str | None = None, owner: str = "",
                    mounts: Sequence[tuple[Path, str]] = ()) -> ContainerSandbox:
        """Start the job's container; the workspace is the only host path it sees.

        It never has a network interface; egress goes through the proxy's socket only.
        """
        if os.geteuid() == 0:  # the sandbox user must own the files it edits
            await asyncio.to_thread(chown_tree, workspace, SANDBOX_UID)
        name = f"handoff-job-{job_id}-{uuid.uuid4().hex[:6]}"
        # The folder is mounted for the container's life; the socket in it exists only
        # while egress is allowed.
        proxy = await EgressProxy.create("handoff-egress-", self.allow_private,
                                         upstream=self.upstream_proxy)
        try:
            await proxy.set_allow(egress or [])
        except SandboxError:
            await proxy.close()
            raise
        lim = self.limits
        argv = [
            *self.engine, "run", "-d", "--init", "--name", name,
            "--label", f"{LABEL}=1", "--label", f"handoff.job={job_id}",
            "--label", f"handoff.host={self.host}", "--label", f"handoff.pid={os.getpid()}",
            "--label", f"handoff.owner={owner}", "--label", f"handoff.process={PROCESS_ID}",
            "--label", f"handoff.deployment={self.deployment}",
            "--user", self.user, "--workdir", WORKDIR,
            "--cap-drop", "all", "--security-opt", "no-new-privileges", "--read-only",
            *(["--security-opt", f"seccomp={self.seccomp}"] if self.seccomp else []),
            "--tmpfs", f"/tmp:rw,exec,size={lim.tmp_mb}m", "--memory", f"{lim.memory_mb}m",
            "--memory-swap", f"{lim.memory_mb}m", "--cpus", str(lim.cpus),
            "--pids-limit", str(lim.pids), "--network", "none",
            "-v", f"{os.path.abspath(workspace)}:{WORKDIR}:rw",
            "-v", f"{proxy.directory}:{MOUNT}:ro",
            *(arg for host, inside in mounts
              for arg in ("-v", f"{os.path.abspath(host)}:{inside}:ro")),
        ]
        if self.name == "podman" and os.geteuid() != 0 and not remote_engine():
            argv += ["--userns", "keep-id"]
        for key, value in SANDBOX_ENV.items():
            argv += ["--env", f"{key}={value}"]
        argv += [image or self.image, "sleep", "infinity"]
        self.live.add(name)  # before it exists, so a concurrent reaping never takes it
        starting = asyncio.ensure_future(run_capped(argv, 120, 16384))
        try:
            result = await asyncio.shield(starting)
        except asyncio.CancelledError:  # the engine makes it all the same: then it goes
            await asyncio.shield(self._abandon(starting, name, proxy))
            raise
        if result.exit_code != 0:
            self.live.discard(name)
            await proxy.close()
            raise SandboxError(f"{self.name} could not start the sandbox: "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        box = ContainerSandbox(self, name, workspace, proxy)
        metrics.SANDBOXES.labels(self.name).inc()
        try:
            await box.find_keeper()
        except (SandboxError, asyncio.CancelledError):
            await asyncio.shield(box.close())
            raise
        return box

    async def _abandon(self, starting: asyncio.Future[CommandResult], name: str,
                       proxy: EgressProxy) -> None:
        """A start cancelled midway (the job was): wait for the engine, remove what it made."""
        with contextlib.suppress(Exception):
            await starting
        await run_capped([*self.engine, "rm", "-f", "-t", "0", name], 60, 4096)
        self.live.discard(name)
        await proxy.close()

    async def cleanup_orphans(self, held: LeaseCheck | None = None) -> list[str]:
        """Remove sandbox containers nobody wants any more, from any live worker.

        Gone are: this process's containers it no longer tracks; those of a dead worker
        process on this host; and, with ``held`` (the store's lease check), those of this
        deployment whose job's lease is no longer held by the worker that started them,
        wherever that worker ran (a replaced replica, a killed pod that was PID 1).
        """
        fmt = "|".join(["{{.Names}}", *(f'{{{{index .Labels "{f}"}}}}' for f in FIELDS)])
        listing = await run_capped([*self.engine, "ps", "-a", "--filter", f"label={LABEL}=1",
                                    "--format", fmt], 60, 1 << 20)
        removed = []
        for line in listing.stdout.splitlines():
            name, *values = line.split("|")
            if len(values) != len(FIELDS):
                continue
            info = {k: ("" if v == "<no value>" else v) for k, v in zip(FIELDS, values,
                                                                          strict=True)}
            if not await self._orphan(name, info, held):
                continue
            await run_capped([*self.engine, "rm", "-f", "-t", "0", name], 60, 4096)
            removed.append(name)
        return removed

    async def _orphan(self, name: str, info: dict[str, str],
                      held: LeaseCheck | None) -> bool:
        if info["handoff.process"] == PROCESS_ID:
            return name not in self.live
        pid = info["handoff.pid"]
        if info["handoff.host"] == self.host and pid.isdigit() and not _alive(int(pid)):
            return True
        if held is not None and info["handoff.owner"] and \
                info["handoff.deployment"] == self.deployment:
            return not await held(info["handoff.job"], info["handoff.owner"])
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["ContainerBackend", "ContainerSandbox"]
