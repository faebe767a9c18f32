"""Moving a work tree into a sandbox pod and its changes back, over exec (as ``kubectl cp``).

In: one tar stream of the work tree and the read-only mounts, unpacked by the pod's init
container. Back, after every command: the pod lists its work tree (type, mode, size, change
time and link target of every entry, gzipped); the host compares that with the listing
before, removes what is gone, makes new folders and symlinks itself and fetches the regular
files whose change time moved (a tar of just those). A process cannot set a change time, so
no change is missed; a rename shows as new paths.

What comes back is hostile: every path is checked, and the host writes only through folders
it opened without following symlinks, so nothing lands outside the work tree.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bot.executor.sandbox.base import WORKDIR, SandboxError

KEPT = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE}
# Lists the work tree: "TYPE MODE SIZE CTIME PATH\0TARGET\0" per entry, gzipped.
LIST_COMMAND = ["sh", "-c", f"cd {WORKDIR} && find . -mindepth 1 -printf '%y %m %s %C@ %P\\0%l\\0'"
                " | gzip -1"]
# Packs the files named on stdin (NUL-separated, $1 bytes of it) for the host.
PACK_COMMAND = ["sh", "-c", f'head -c "$1" | tar -c -C {WORKDIR} --no-recursion --null '
                "--hard-dereference -T - -f -", "sh"]


@dataclass(frozen=True)
class Entry:
    kind: str  # f, d or l (other kinds are left out: the host has no use for them)
    mode: int
    size: int
    ctime: str
    target: str = ""


Listing = dict[str, Entry]


def _members(root: Path, prefix: str) -> Iterator[tuple[tarfile.TarInfo, Path]]:
    """Tar entries for everything under ``root`` (not ``root`` itself), links not followed."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(folder, name)
            st = path.lstat()
            info = tarfile.TarInfo(f"{prefix}/{path.relative_to(root).as_posix()}")
            info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
            if stat.S_ISREG(st.st_mode):
                info.type, info.size = tarfile.REGTYPE, st.st_size
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            else:
                continue  # sockets, fifos, devices: nothing a non-root tar could make
            yield info, path


def pack_in(trees: list[tuple[Path, str]]) -> IO[bytes]:
    """One tar of each (host folder, prefix), its folders' contents under the prefix; a
    spooled file, rewound. Hard links become copies: the trees are separate volumes."""
    spool = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # noqa: SIM115 (returned)
    with tarfile.open(fileobj=spool, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for root, prefix in trees:
            for info, path in _members(root, prefix):
                if info.type != tarfile.REGTYPE:
                    tar.addfile(info)
                    continue
                with open_regular(path) as data:
                    info.size = os.fstat(data.fileno()).st_size
                    tar.addfile(info, data)
    spool.seek(0)
    return spool


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened for reading only if it is still a regular file: a symlink or device
    swapped in since it was listed is refused, never followed or read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SandboxError(f"{path.name} changed while the work tree was packed")
    return os.fdopen(fd, "rb")


def _safe(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(
        p not in ("", ".", "..") for p in parts) and "\0" not in path


def parse_listing(gzipped: bytes) -> Listing:
    """The pod's listing; entries of other kinds and unsafe paths are left out."""
    try:
        raw = zlib.decompress(gzipped, wbits=31) if gzipped else b""
    except zlib.error as exc:
        raise SandboxError(f"the sandbox's file listing is corrupt: {exc}") from exc
    fields = raw.split(b"\0")
    listing: Listing = {}
    for head, target in zip(fields[0::2], fields[1::2], strict=False):
        parts = head.decode("utf-8", "surrogateescape").split(" ", 4)
        if len(parts) != 5 or parts[0] not in KEPT or not _safe(parts[4]):
            continue
        kind, mode, size, ctime, path = parts
        listing[path] = Entry(kind, int(mode, 8) & 0o7777, int(size), ctime,
                              target.decode("utf-8", "surrogateescape") if kind == "l" else "")
    return listing


@dataclass
class Changes:
    removed: list[str]
    dirs: list[str]
    links: list[str]
    files: list[str]

    def __bool__(self) -> bool:
        return bool(self.removed or self.dirs or self.links or self.files)


def compare(before: Listing, after: Listing) -> Changes:
    """What the host must do to turn ``before`` into ``after``."""
    changed = sorted(p for p, e in after.items() if before.get(p) != e)
    gone = [p for p in before if p not in after or before[p].kind != after[p].kind]
    return Changes(removed=sorted(gone, key=lambda p: -p.count("/")),
                   dirs=[p for p in changed if after[p].kind == "d"],
                   links=[p for p in changed if after[p].kind == "l"],
                   files=[p for p in changed if after[p].kind == "f"])


def tree_bytes(listing: Listing) -> int:
    return sum(e.size for e in listing.values() if e.kind == "f")


class HostTree:
    """Writes into a host work tree only through folders opened without following links."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def parent(self, path: str, make: bool) -> Iterator[tuple[int, str] | None]:
        """An fd of the folder holding ``path`` and its last name; None when a folder on
        the way is missing (and ``make`` is false). A non-folder on the way is replaced."""
        *folders, name = path.split("/")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in folders:
                try:
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not make:
                        yield None
                        return
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except (NotADirectoryError, OSError):
                    if not make:
                        yield None
                        return
                    remove_at(fd, part)
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nxt
            yield fd, name
        finally:
            os.close(fd)

    def remove(self, path: str) -> None:
        with self.parent(path, make=False) as found:
            if found is not None:
                remove_at(*found)

    def make_dir(self, path: str, mode: int) -> None:
        with self.parent(path, make=True) as found:
            assert found is not None
            fd, name = found
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    remove_at(fd, name)
                    os.mkdir(name, 0o755, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(name, 0o755, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                os.fchmod(sub, mode & 0o777 | 0o700)  # the host must be able to read it
            finally:
                os.close(sub)

    def make_link(self, path: str, target: str) -> None:
        with self.parent(path, make=True) as found:
            assert found is not None
            fd, name = found
            remove_at(fd, name)
            os.symlink(target, name, dir_fd=fd)

    def write_file(self, path: str, mode: int, mtime: float, data: IO[bytes]) -> None:
        with self.parent(path, make=True) as found:
            assert found is not None
            fd, name = found
            remove_at(fd, name)
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                          0o600, dir_fd=fd)
            try:
                with os.fdopen(os.dup(out), "wb") as sink:
                    shutil.copyfileobj(data, sink, 1 << 20)
                os.fchmod(out, mode & 0o777 | 0o600)
                os.utime(out, (mtime, mtime))
            finally:
                os.close(out)


def remove_at(fd: int, name: str) -> None:
    """Remove ``name`` in folder ``fd``, whatever it is; no link is followed."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=fd)
    else:
        os.unlink(name, dir_fd=fd)


def apply(tree: HostTree, changes: Changes, after: Listing, packed: IO[bytes] | None) -> None:
    """Make the host tree match ``after``: removals, folders, links, then the fetched files
    (only those asked for, as regular files)."""
    for path in changes.removed:
        tree.remove(path)
    for path in changes.dirs:
        tree.make_dir(path, after[path].mode)
    for path in changes.links:
        tree.make_link(path, after[path].target)
    if packed is None:
        return
    wanted = set(changes.files)
    with tarfile.open(fileobj=packed, mode="r|") as tar:
        for member in tar:
            if member.name not in wanted or not member.isreg():
                continue
            data = tar.extractfile(member)
            if data is not None:
                tree.write_file(member.name, after[member.name].mode, member.mtime, data)
