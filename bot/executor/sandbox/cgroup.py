"""A cgroup per bubblewrap sandbox: memory, pids and CPU limits the kernel enforces.

cgroup v2 (a unified hierarchy with the memory and pids controllers) or v1 (the ``memory``,
``pids`` and ``cpu`` hierarchies) under ``/sys/fs/cgroup``, in a ``handoff`` folder the worker
creates. A host that offers neither writable gets a ``SandboxError``: a sandbox without
limits is not started.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

from bot.executor.sandbox.base import Limits, SandboxError

ROOT = Path("/sys/fs/cgroup")
GROUP = "handoff"
# Puts the shell itself into each cgroup.procs file named before "--", then becomes the rest.
ENTER = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def _write(path: Path, value: str) -> None:
    path.write_text(value)


class Cgroup:
    """One sandbox's cgroup (one folder per hierarchy on v1)."""

    def __init__(self, dirs: list[Path], v2: bool) -> None:
        self.dirs, self.v2 = dirs, v2

    @classmethod
    def create(cls, name: str, limits: Limits, root: Path = ROOT) -> Cgroup:
        try:
            if (root / "cgroup.controllers").exists():
                return cls._create_v2(root, name, limits)
            return cls._create_v1(root, name, limits)
        except OSError as exc:
            raise SandboxError(
                "bubblewrap needs a writable cgroup for its memory, process and CPU limits "
                f"and none is available here ({exc}); run the worker as root or in a cgroup "
                "it may manage, or use the podman backend") from exc

    @classmethod
    def _create_v1(cls, root: Path, name: str, limits: Limits) -> Cgroup:
        missing = [c for c in ("memory", "pids", "cpu") if not (root / c).is_dir()]
        if missing:
            raise OSError(f"no cgroup v1 hierarchy for {', '.join(missing)} under {root}")
        dirs = []
        for controller in ("memory", "pids", "cpu"):
            path = root / controller / GROUP / name
            path.mkdir(parents=True, exist_ok=True)
            dirs.append(path)
        memory, pids, cpu = dirs
        limit = str(limits.memory_mb * 1024 * 1024)
        _write(memory / "memory.limit_in_bytes", limit)
        if (memory / "memory.memsw.limit_in_bytes").exists():  # no swapping past the limit
            _write(memory / "memory.memsw.limit_in_bytes", limit)
        _write(pids / "pids.max", str(limits.pids))
        _write(cpu / "cpu.cfs_period_us", "100000")
        _write(cpu / "cpu.cfs_quota_us", str(int(limits.cpus * 100000)))
        return cls(dirs, v2=False)

    @classmethod
    def _create_v2(cls, root: Path, name: str, limits: Limits) -> Cgroup:
        parent = root / GROUP
        parent.mkdir(exist_ok=True)
        for folder in (root, parent):
            enabled = (folder / "cgroup.subtree_control").read_text().split()
            for controller in ("memory", "pids", "cpu"):
                if controller not in enabled:
                    _write(folder / "cgroup.subtree_control", f"+{controller}")
        path = parent / name
        path.mkdir(exist_ok=True)
        _write(path / "memory.max", str(limits.memory_mb * 1024 * 1024))
        with contextlib.suppress(OSError):
            _write(path / "memory.swap.max", "0")
        _write(path / "pids.max", str(limits.pids))
        _write(path / "cpu.max", f"{int(limits.cpus * 100000)} 100000")
        return cls([path], v2=True)

    def enter(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this cgroup (a shell writes its pid, then execs ``argv``)."""
        return ["/bin/sh", "-c", ENTER, "sh", *(str(d / "cgroup.procs") for d in self.dirs),
                "--", *argv]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.dirs:
            with contextlib.suppress(OSError):
                found |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
        return found

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, again until none is left (forks in flight)."""
        if self.v2 and (self.dirs[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.dirs[0] / "cgroup.kill", "1")
        for _ in range(100):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            text = (self.dirs[0] / name).read_text()
            found = re.search(r"^oom_kill (\d+)", text, re.M)
            return int(found.group(1)) if found else 0
        return 0

    def remove(self) -> None:
        self.kill_all()
        for folder in self.dirs:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def stale_groups(root: Path = ROOT) -> list[Path]:
    """Sandbox cgroups whose worker process (``<pid>-...`` in the name) is gone."""
    found = []
    for parent in [root / GROUP, *(root / c / GROUP for c in ("memory", "pids", "cpu"))]:
        if not parent.is_dir():
            continue
        for child in parent.iterdir():
            pid = child.name.split("-", 1)[0]
            if child.is_dir() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
                found.append(child)
    return found
