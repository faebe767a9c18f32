"""A work tree on a file system of its own size (an ext4 image on a loop device), so a sandbox
cannot write past its disk limit however fast it writes. The disk watchdog, which polls, stays
as the fallback where a volume cannot be had (a worker that is not root, no loop devices)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Settings

# Room above the limit, so the watchdog still sees the limit passed and names it (the job
# fails as disk-limit) before a write meets a full file system; ext4's own tables use some.
MARGIN_MB = 32
TOOLS = ("mkfs.ext4", "mount", "umount")


class VolumeError(Exception):
    """The volume could not be made (the message holds the tool's own words)."""


def available() -> bool:
    """Whether this worker can make volumes: root, the tools, and loop devices."""
    return os.geteuid() == 0 and all(shutil.which(t) for t in TOOLS) and \
        Path("/dev/loop-control").exists()


def wanted_mb(settings: Settings) -> int:
    """The limit work trees' volumes get, or 0 for none (off, or none can be had here)."""
    return settings.workspace_max_mb if settings.workspace_volume == "auto" and available() \
        else 0


def size_mb(limit_mb: int) -> int:
    return limit_mb + max(MARGIN_MB, limit_mb // 16)


async def mount(tree: Path, image: Path, limit_mb: int) -> None:
    """Make the empty folder ``tree`` the root of a fresh file system of about ``limit_mb``,
    held in the sparse file ``image`` (which no sandbox sees)."""
    image.parent.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    with image.open("wb") as fh:
        fh.truncate(size_mb(limit_mb) << 20)
    await _run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E",
               "lazy_itable_init=1,nodiscard", str(image))
    await _run("mount", "-o", "loop,nosuid,nodev,noinit_itable", str(image), str(tree))
    (tree / "lost+found").rmdir()


def unmount(tree: Path, image: Path) -> None:
    """Detach the volume at ``tree`` if there is one (lazily: a process still inside lets go
    of it when it ends) and delete its image."""
    if os.path.ismount(tree):
        subprocess.run(["umount", "-l", str(tree)], capture_output=True, check=False)
    with contextlib.suppress(FileNotFoundError):
        image.unlink()


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise VolumeError(f"{argv[0]} failed: {err.decode(errors='replace').strip()}")
