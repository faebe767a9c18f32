"""The warm environment: what a successful setup prepared, kept so later jobs skip the setup.

After a setup on the default branch's state succeeds (before the agent's first command), the
sandbox writes what the setup left outside the repository's files into two archives: its home
folder (pip's user installs and caches, Go's module cache) and the untracked files of the work
tree (``node_modules``, a virtualenv, ``*.egg-info``). The worker keeps them under
``data_dir/warm/<installation>/<owner>/<repo>/<key>``, keyed by the installation, the
repository, the sandbox backend and image, the setup commands, the package index settings and
the hashes of every lock, manifest and build file at the default branch's tip (and of the
files the commands name). A later job whose key matches, within the lifetime, starts its
sandbox and unpacks them inside it (never on the host), instead of the setup. On Kubernetes
the archives reach the worker with the pod's work tree (and leave the pod once kept), and a
kept environment is streamed into the next pod as a read-only volume; the image there is a
reference its node resolves, so the digest the pod ran is kept too and checked by the next.

Never from an agent's branch (kept only when the work tree is the default branch's tip and
no build file differs), never shared across repositories or installations (they are part of
the folder and of the key), bounded in size with the least recently used evicted first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import json
import os
import shlex
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.executor.dependencies import BUILD_FILES, Setup, _paths_in
from bot.executor.gitops import Checkout
from bot.executor.sandbox import Backend, Sandbox, SandboxError
from bot.executor.sandbox.base import DIR_FLAGS, run_capped
from bot.executor.workspace import host_lock
from bot.reporter.markdown import code

MOUNT = "/opt/handoff/warm"  # where a sandbox sees a kept environment (read-only)
OUT = ".git/handoff-warm"  # where, in the work tree, the sandbox writes the archives
ARCHIVES = ("home.tar", "tree.tar")
META = "meta.json"
# Whatever is mounted inside the home folder (by the backend, or a test's tools) is not the
# setup's work, and unpacking it over the mount later fails: one --exclude each.
NOT_MOUNTS = ("$(awk -v h=\"$HOME/\" 'index($5, h) == 1 "
              "{print \"--exclude=\" substr($5, length(h) + 1)}' /proc/self/mountinfo)")
# Run in the work tree; the untracked paths (NUL-separated) on stdin.
# (The home folder's entries, never the folder itself: the sandbox may not change its mode.)
CAPTURE = (f'rm -rf {OUT} && mkdir -p {OUT} && (cd "$HOME" && find . -mindepth 1 -maxdepth 1 '
           f"-printf '%P\\0') | tar -cf {OUT}/home.tar -C \"$HOME\" {NOT_MOUNTS} --null "
           f"--files-from=- && tar -cf {OUT}/tree.tar --null --files-from=-")
# Kilobytes the archives will take: the home folder's, then the listed paths' (on stdin).
MEASURE = 'du -sk "$HOME" | cut -f1; du -sck --files0-from=- | tail -n 1 | cut -f1'
# Files the work tree has (the branch's own) are never replaced by kept ones.
RESTORE = ('tar -xf "$W/home.tar" -C "$HOME" --no-overwrite-dir && '
           'tar -xf "$W/tree.tar" --skip-old-files')
# Removes the archives inside the sandbox too (a pod's work tree is its own copy).
DROP = f"rm -rf {OUT}"


def setup_steps(setup: Setup) -> list[str]:
    """The commands a setup runs, in order: what the key holds of it (the one place to read
    them, for when setup steps become a list)."""
    return [c for c in (setup.command, setup.offline) if c]


@dataclass(frozen=True)
class Key:
    """What a kept environment was made from; ``digest`` names it."""

    installation: int
    repo: str
    parts: dict[str, Any]

    @property
    def digest(self) -> str:
        text = json.dumps([self.installation, self.repo.lower(), self.parts], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Entry:
    """One kept environment on disk."""

    path: Path
    meta: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.meta.get("size", 0))

    @property
    def used(self) -> float:
        return float(self.meta.get("used", self.meta.get("created", 0)))

    @property
    def created(self) -> float:
        return float(self.meta.get("created", 0))


@dataclass
class Plan:
    """Warm or cold for one job, and why; ``keep`` says a cold setup's result may be kept."""

    state: str  # "warm" or "cold"
    reason: str
    key: Key | None = None
    entry: Entry | None = None
    keep: bool = False
    notes: list[str] = field(default_factory=list)


class WarmCache:
    """Kept environments under ``root``, at most ``max_mb`` in all, each for ``hours``."""

    def __init__(self, root: Path, max_mb: int, hours: float) -> None:
        self.root, self.max_bytes, self.lifetime = root, max_mb * 1024 * 1024, hours * 3600

    def folder(self, installation: int, repo: str) -> Path:
        owner, _, name = repo.lower().partition("/")
        return self.root / str(installation) / owner / name

    def entries(self, installation: int | None = None, repo: str | None = None) -> list[Entry]:
        """Every kept environment (of one repository, with both arguments)."""
        base = self.folder(installation, repo) if installation is not None and repo \
            else self.root
        found = []
        for meta in sorted(base.glob(f"**/{META}")) if base.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                found.append(Entry(meta.parent, json.loads(meta.read_text())))
        return found

    def expired(self, entry: Entry, now: float | None = None) -> bool:
        return (now or time.time()) - entry.created > self.lifetime

    def find(self, key: Key) -> Entry | None:
        """The kept environment for ``key``, if there is one within its lifetime."""
        path = self.folder(key.installation, key.repo) / key.digest
        try:
            entry = Entry(path, json.loads((path / META).read_text()))
        except (OSError, ValueError):
            return None
        if self.expired(entry) or not all((path / a).is_file() for a in ARCHIVES):
            return None
        return entry

    def touch(self, entry: Entry) -> None:
        """Mark an environment used now (the eviction removes the least recently used)."""
        entry.meta["used"] = time.time()
        _write_meta(entry.path, entry.meta)

    async def keep(self, key: Key, archives: Path, secrets: Sequence[str] = (),
                   image_id: str = "") -> Entry:
        """Keep the archives the sandbox wrote in the work tree ``archives`` for ``key``
        (unless they hold one of the ``secrets``), in place of the repository's older ones;
        then evict down to size. ``image_id``: the image the sandbox ran, as resolved only
        once it ran (a Kubernetes node's digest of the key's image reference)."""
        folder = self.folder(key.installation, key.repo)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key.digest}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o755)
        size = 0
        try:
            for name in ARCHIVES:
                size += await asyncio.to_thread(_copy_regular, archives, name, tmp / name)
            if await asyncio.to_thread(carries, tmp, secrets):
                raise OSError("it holds a secret a setup step was given")
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        now = time.time()
        meta = {"installation": key.installation, "repo": key.repo, "key": key.digest,
                "parts": key.parts, "created": now, "used": now, "size": size,
                **({"image_id": image_id} if image_id else {})}
        _write_meta(tmp, meta)
        async with host_lock(self.root / ".lock"):
            final = folder / key.digest
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for older in self.entries(key.installation, key.repo):  # replaced by this one
                if older.path != final:
                    shutil.rmtree(older.path, ignore_errors=True)
            self.evict()
        return Entry(final, meta)

    def evict(self, now: float | None = None) -> list[Entry]:
        """Remove expired environments, then the least recently used until the rest fit."""
        entries = self.entries()
        gone = [e for e in entries if self.expired(e, now)]
        alive = sorted((e for e in entries if e not in gone), key=lambda e: e.used)
        total = sum(e.size for e in alive)
        while alive and total > self.max_bytes:
            oldest = alive.pop(0)
            total -= oldest.size
            gone.append(oldest)
        for entry in gone:
            shutil.rmtree(entry.path, ignore_errors=True)
        return gone

    def clear(self, repo: str | None = None) -> list[Entry]:
        """Remove every kept environment, or those of one repository (any installation)."""
        gone = [e for e in self.entries()
                if repo is None or str(e.meta.get("repo", "")).lower() == repo.lower()]
        for entry in gone:
            shutil.rmtree(entry.path, ignore_errors=True)
        return gone


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    tmp = folder / f".{META}.{os.getpid()}"
    tmp.write_text(json.dumps(meta, sort_keys=True))
    tmp.chmod(0o644)
    tmp.replace(folder / META)


def _copy_regular(folder: Path, name: str, target: Path) -> int:
    """Copy ``folder/name`` to ``target`` without following a link anywhere on the way (the
    sandbox wrote it: a link to a host file must not bring that file into the cache)."""
    parts = [*Path(OUT).parts, name]
    fd = os.open(folder, DIR_FLAGS)
    try:
        for part in parts[:-1]:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        src = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(src, "rb") as reader:
        if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
            raise OSError(f"{name} is not a regular file")
        with open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
        target.chmod(0o644)
        return os.fstat(reader.fileno()).st_size


async def key_for(co: Checkout, rev: str, installation: int, repo: str, image: str,
                  steps: Sequence[str], env: dict[str, str]) -> Key:
    """The key of the environment ``steps`` make for the repository at ``rev``."""
    listing = await co.git("ls-tree", "-r", "-z", "--full-tree", rev)
    named = {p for step in steps for p in _paths_in(step)}
    files = {}
    for line in listing.split("\0"):
        if not line:
            continue
        meta, path = line.split("\t", 1)
        name = path.rsplit("/", 1)[-1]
        if path in named or any(fnmatch.fnmatch(name, p) for p in BUILD_FILES):
            files[path] = meta.split()[2]
    return Key(installation, repo, {"image": image, "steps": list(steps), "env": env,
                                    "files": files})


async def image_id(backend: Backend, image: str) -> str:
    """What the sandbox's root file system is: the image's id (a rebuilt image is another
    one), the image's reference on Kubernetes (its nodes resolve it: pin it by digest, or give
    each build a tag of its own), or the host's system for bubblewrap."""
    engine = getattr(backend, "engine", None)
    if engine:
        found = await run_capped([*engine, "image", "inspect", "--format", "{{.Id}}", image],
                                 60, 4096)
        return f"{image}@{found.stdout.strip()}" if found.ok else image
    if backend.name == "kubernetes":  # the nodes resolve it: the reference as the pods name it
        return f"kubernetes:{image}"
    release = Path("/etc/os-release")
    text = release.read_text() if release.exists() else ""
    return f"{backend.name}:host:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two keys' parts, for a person: the files first."""
    before, after = old.get("files", {}), new.get("files", {})
    files = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    if files:
        shown = ", ".join(code(p) for p in files[:5]) + \
            (f" and {len(files) - 5} more" if len(files) > 5 else "")
        return f"{shown} changed"
    for part, words in (("steps", "the setup commands"), ("image", "the sandbox image"),
                        ("env", "the package index settings")):
        if old.get(part) != new.get(part):
            return f"{words} changed"
    return "the key changed"


def supported(backend: Backend) -> str:
    """Why this backend starts cold, or "" when it can start warm."""
    return "" if backend.supports("warm") else \
        f"the {backend.name} sandbox keeps no warm environment"


def decide(cache: WarmCache, key: Key, offline: bool, on_base: bool) -> Plan:
    """Warm when a kept environment matches; else cold, with the reason a person reads."""
    if offline:
        return Plan("cold", "this branch changes files that decide the setup", key)
    if entry := cache.find(key):
        age = (time.time() - entry.created) / 3600
        # keep: should the environment not unpack, the setup's result replaces it.
        return Plan("warm", f"the setup and its lock and manifest files are as when this "
                    f"environment was kept {age:.1f} h ago", key, entry, keep=on_base)
    keep = on_base
    earlier = sorted(cache.entries(key.installation, key.repo), key=lambda e: e.created)
    if not earlier:
        return Plan("cold", "no environment kept for this repository yet", key, keep=keep)
    last = earlier[-1]
    if last.meta.get("key") == key.digest:  # found but expired or incomplete
        return Plan("cold", f"the kept environment is older than "
                    f"{cache.lifetime / 3600:g} h", key, keep=keep)
    return Plan("cold", changed(last.meta.get("parts", {}), key.parts) +
                " since the last environment was kept", key, keep=keep)


async def untracked(co: Checkout) -> list[str]:
    """Everything in the work tree git does not track, ignored files too (a setup's
    ``node_modules/``, ``.venv/``), folders as one entry each."""
    made = await co.git("ls-files", "--others", "--directory", "-z")
    return [p for p in made.split("\0") if p]


async def capture(box: Sandbox, co: Checkout, room_mb: int) -> str:
    """Have the sandbox write the archives into the work tree (``OUT``); "" or why not. Not
    when they would not fit in ``room_mb`` (the work tree's disk limit is never reached)."""
    paths = await untracked(co)
    listed = b"".join(p.encode() + b"\0" for p in paths)
    sized = await box.exec(MEASURE, stdin=listed)
    try:
        needed_mb = sum(int(n) for n in sized.stdout.split()) // 1024 + 1
    except ValueError:
        return f"its size could not be measured: {sized.stdout[-200:]}"
    if needed_mb > room_mb:
        return f"it is too large to keep ({needed_mb} MB, {room_mb} MB of room)"
    done = await box.exec(CAPTURE, stdin=listed)
    return "" if done.ok else f"{done.describe()}: {(done.stderr or done.stdout)[-300:]}"


def carries(folder: Path, values: Sequence[str]) -> bool:
    """Whether an archive in ``folder`` holds any of ``values`` (a secret a setup step was
    given), as it is or in base64 or hex: such an environment is never kept."""
    needles = [n.encode() for v in values if v for n in encodings(v)]
    if not needles:
        return False
    overlap = max(len(n) for n in needles)
    for name in ARCHIVES:
        with open(folder / name, "rb") as archive:
            tail = b""
            while chunk := archive.read(1 << 20):
                window = tail + chunk
                if any(n in window for n in needles):
                    return True
                tail = window[-overlap:]
    return False


def encodings(value: str) -> list[str]:
    """A secret's text, base64 and hex forms."""
    raw = value.encode()
    return [value, base64.b64encode(raw).decode().rstrip("="), raw.hex()]


def resolved_image(box: Sandbox) -> str:
    """The image a started sandbox runs, where the backend learns it only then (a Kubernetes
    pod's digest); "" elsewhere (the key holds the image's id already)."""
    return str(getattr(box, "image_id", "") or "")


def image_moved(entry: Entry, box: Sandbox) -> str:
    """Why the kept environment does not fit this sandbox's image although the key's image
    reference matched (a tag pushed again), or ""."""
    kept, now = str(entry.meta.get("image_id", "")), resolved_image(box)
    if kept and now and kept != now:
        return (f"the sandbox image was rebuilt under the same name since this environment "
                f"was kept (now {code(now[-19:])}, then {code(kept[-19:])})")
    return ""


def restore_command(where: str) -> str:
    """Unpack a kept environment seen at ``where`` into the sandbox's home and work tree."""
    return f"W={shlex.quote(where)}; {RESTORE}"


async def drop_output(box: Sandbox, co: Checkout) -> None:
    """Remove the archives the sandbox wrote (never part of the agent's work tree): in the
    sandbox (a pod's copy of the work tree takes its disk), then on the host, through folder
    descriptors (a ``.git`` swapped for a link is never followed)."""
    with contextlib.suppress(SandboxError):  # a pod gone: the job's next command says so
        await box.exec(DROP)
    *parents, last = Path(OUT).parts
    with contextlib.suppress(OSError):
        fd = os.open(co.work_tree, DIR_FLAGS)
        try:
            for part in parents:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            shutil.rmtree(last, dir_fd=fd)
        finally:
            os.close(fd)
