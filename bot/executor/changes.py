"""What the agent changed: files, safety checks before a push, and notes for reviewers."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from bot.executor.gitops import NO_DRIVERS, Checkout
from bot.jobs.changes import TEST_PATH, FileChange
from bot.logs import SECRET_PATTERNS, printable
from bot.reporter.markdown import code

# Files no change means to add: backups, merge and patch leftovers, editor swap files.
LEFTOVER = re.compile(r"(\.(orig|rej|bak|backup|fixed|swp)|~)$")
# A line of a test that states what is expected.
EXPECTATION = re.compile(r"\b(assert\w*|expect|should|to(Be|Equal|StrictEqual|Throw)\w*|want|"
                         r"Errorf|Fatalf|deepStrictEqual|strictEqual|raises)\b|==")


async def changed_files(co: Checkout, base: str) -> list[FileChange]:
    """Files that differ between ``base`` and the work tree (staged everything first); new
    leftovers (``*.orig``, ``*.rej``, ``*.bak``, ``*.backup``...) are left out for good."""
    new = set(await added_paths(co, base))
    if leftovers := sorted(p for p in new if LEFTOVER.search(p)):
        exclude(co, leftovers)
        await co.git("rm", "--cached", "-q", "--", *(f":(literal){p}" for p in leftovers))
    out = await co.git("diff", "--cached", "--numstat", "--no-renames", "-z", *NO_DRIVERS, base)
    files = []
    for record in out.split("\0"):
        if record:
            added, removed, path = record.split("\t", 2)
            files.append(FileChange(path, int(added) if added.isdigit() else 0,
                                    int(removed) if removed.isdigit() else 0, path in new))
    for f in files:
        if TEST_PATH.search(f.path) and not f.new and f.removed:
            diff = await co.git("diff", "--cached", "-U0", "--no-renames", *NO_DRIVERS, base,
                                "--", f.path)
            f.expectation_changed = any(
                line.startswith("-") and not line.startswith("---") and EXPECTATION.search(line)
                for line in diff.splitlines())
    return files


async def added_paths(co: Checkout, base: str) -> list[str]:
    """Paths in the work tree that ``base`` does not have (everything staged first)."""
    await co.git("add", "-A")
    out = await co.git("diff", "--cached", "--name-only", "--no-renames", "-z",
                       "--diff-filter=A", base)
    return [p for p in out.split("\0") if p]


def exclude(co: Checkout, paths: list[str]) -> None:
    """Keep these work-tree paths out of every commit (the trusted git directory's
    ``info/exclude``, each path literal)."""
    if paths:
        (co.git_dir / "info").mkdir(exist_ok=True)
        with (co.git_dir / "info" / "exclude").open("a") as file:
            file.writelines("/" + re.sub(r"([\\*?\[\]!#])", r"\\\1", p) + "\n" for p in paths)


async def refusal(co: Checkout, base: str, files: list[FileChange]) -> str | None:
    """Why this change must not be pushed, or None."""
    workflows = [f.path for f in files if f.path.startswith(".github/workflows/")]
    if workflows:
        return (f"the change edits {', '.join(name(w) for w in workflows)}; Handoff never "
                "pushes changes to GitHub Actions workflows (the App has no workflows "
                "permission)")
    if why := await _odd_entries(co, base):
        return why
    diff = await co.git("diff", "--cached", "-U0", "--no-renames", *NO_DRIVERS, base)
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++") and SECRET_PATTERNS.search(line):
            return "the change adds a line that looks like a secret (a token or private key)"
    return None


async def _odd_entries(co: Checkout, base: str) -> str | None:
    """Names that are not UTF-8, symlinks that leave the repository and embedded
    repositories are never pushed. Each entry's mode comes from the same listing as its
    name, as bytes: no second lookup by pathspec, which a name like ``:link`` would steer."""
    raw = await co.git_bytes("diff", "--cached", "--raw", "-z", "--no-renames", "--no-abbrev",
                             *NO_DRIVERS, base)
    fields = raw.split(b"\0")
    for meta, entry in zip(fields[0::2], fields[1::2], strict=False):
        _, mode, _, sha, _ = meta.lstrip(b":").decode().split(" ")
        if mode == "000000":  # deleted
            continue
        try:
            path = entry.decode()
        except UnicodeDecodeError:
            return (f"the change adds {name(entry.decode(errors='backslashreplace'))}, a file "
                    "name that is not UTF-8; Handoff pushes UTF-8 names only")
        if mode == "160000":
            return f"the change adds {name(path)} as an embedded git repository (a gitlink)"
        if mode == "120000":
            target = (await co.git_bytes("cat-file", "blob", sha)).decode(errors="replace")
            if leaves_repo(path, target):
                return (f"the change adds {name(path)} as a symlink to "
                        f"{name(target[:200])}, outside the repository")
    return None


def name(text: str) -> str:
    """An agent-made name in a reason: a code span, its control characters escaped (``\\x1b``)
    so that it can drive no terminal that prints the reason."""
    return code(printable(text))


def leaves_repo(path: str, target: str) -> bool:
    """Whether a symlink at ``path`` pointing at ``target`` resolves outside the repository."""
    if target.startswith("/") or not target:
        return True
    depth = len(PurePosixPath(path).parent.parts)
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False
