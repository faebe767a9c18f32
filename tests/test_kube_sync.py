"""Copying a sandbox pod's work tree back to the host: what the pod sends is hostile."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from bot.executor.sandbox.base import SandboxError
from bot.executor.sandbox.kube_sync import (
    Entry,
    HostTree,
    apply,
    compare,
    open_regular,
    pack_in,
    parse_listing,
)


def listing(*entries: tuple[str, str, str]) -> bytes:
    """A gzipped listing as the pod's ``find -printf`` writes it: (kind, path, target)."""
    raw = b"".join(f"{kind} 644 1 1.5 {path}\0{target}\0".encode()
                   for kind, path, target in entries)
    return gzip.compress(raw)


def tar_of(*files: tuple[str, bytes], kind: bytes = tarfile.REGTYPE) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.type, info.mode = len(data), kind, 0o644
            if kind == tarfile.SYMTYPE:
                info.size, info.linkname = 0, "/etc/passwd"
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def test_unsafe_paths_and_other_kinds_are_left_out() -> None:
    parsed = parse_listing(listing(("f", "ok.txt", ""), ("f", "../up", ""), ("f", "/abs", ""),
                                   ("f", "a/../b", ""), ("d", "a//b", ""), ("p", "fifo", ""),
                                   ("l", "ln", "/etc"), ("d", "dir with space", "")))
    assert sorted(parsed) == ["dir with space", "ln", "ok.txt"]
    assert parsed["ln"].target == "/etc"  # a link may point anywhere; it is never followed
    with pytest.raises(SandboxError, match="corrupt"):
        parse_listing(b"not gzip")


def test_writes_never_follow_a_symlink_out_of_the_tree(tmp_path: Path) -> None:
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "evil").symlink_to(outside)
    before = {"evil": Entry("l", 0o777, 0, "1", str(outside))}
    after = {"evil": Entry("d", 0o755, 0, "2"), "evil/x": Entry("f", 0o644, 3, "2")}
    apply(HostTree(root), compare(before, after), after, tar_of(("evil/x", b"abc")))
    assert list(outside.iterdir()) == []
    assert (root / "evil").is_dir() and not (root / "evil").is_symlink()
    assert (root / "evil" / "x").read_bytes() == b"abc"


def test_only_the_files_asked_for_are_written_and_only_as_files(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    after = {"a": Entry("f", 0o755, 1, "2")}
    packed = tar_of(("a", b"A"), ("../escape", b"E"), ("b", b"B"))
    apply(HostTree(root), compare({}, after), after, packed)
    assert sorted(p.name for p in root.iterdir()) == ["a"]
    assert (root / "a").stat().st_mode & 0o111 and not (tmp_path / "escape").exists()
    apply(HostTree(root), compare({}, after), after, tar_of(("a", b""), kind=tarfile.SYMTYPE))
    assert not (root / "a").is_symlink()


def test_a_file_under_a_symlinked_folder_does_not_escape_on_removal(tmp_path: Path) -> None:
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "keep").write_text("mine")
    (root / "d").symlink_to(outside)
    before = {"d": Entry("d", 0o755, 0, "1"), "d/keep": Entry("f", 0o644, 4, "1")}
    after = {"d": Entry("d", 0o755, 0, "1")}
    apply(HostTree(root), compare(before, after), after, None)
    assert (outside / "keep").read_text() == "mine"


def test_pack_in_keeps_modes_and_links_and_skips_the_rest(tmp_path: Path) -> None:
    import os

    root = tmp_path / "ws"
    (root / "d").mkdir(parents=True)
    (root / "d" / "run").write_text("x")
    (root / "d" / "run").chmod(0o755)
    (root / "hard").hardlink_to(root / "d" / "run")
    (root / "ln").symlink_to("d/run")
    os.mkfifo(root / "fifo")
    with pack_in([(root, "ws")]) as spool, tarfile.open(fileobj=spool) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["ws/d", "ws/d/run", "ws/hard", "ws/ln"]
    assert members["ws/d/run"].mode == 0o755 and members["ws/hard"].isreg()
    assert members["ws/ln"].issym() and members["ws/ln"].linkname == "d/run"


def test_a_file_swapped_for_a_link_after_the_listing_is_never_read(tmp_path: Path) -> None:
    """What was listed as a regular file and is a link to a device or a host file by the
    time it is opened (audit 3, C1) is refused, not followed."""
    secret = tmp_path / "secret"
    secret.write_text("HOST-SECRET")
    for target in ("/dev/zero", str(secret)):
        swapped = tmp_path / "f"
        swapped.unlink(missing_ok=True)
        swapped.symlink_to(target)
        with pytest.raises(OSError):
            open_regular(swapped)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SandboxError, match="changed while"):
        open_regular(fifo)
    (tmp_path / "plain").write_text("ok")
    with open_regular(tmp_path / "plain") as data:
        assert data.read() == b"ok"
