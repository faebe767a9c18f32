"""What the agent changed: files, safety checks before a push, and notes for reviewers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bot.gitops import git

SECRET_LIKE = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}|sk-[A-Za-z0-9_-]{20,}"
    r"|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|xox[baprs]-[A-Za-z0-9-]{10,})")
RISKY = re.compile(r"(^|/)(\.github/|Dockerfile|setup\.py|pyproject\.toml|package(-lock)?\.json"
                   r"|requirements[^/]*\.txt|.*\.lock$|Makefile|.*\.ya?ml$)")
TEST_PATH = re.compile(r"(^|/)(tests?/|test_[^/]*$|[^/]*_test\.[a-z]+$|[^/]*\.test\.[a-z]+$)")


@dataclass
class FileChange:
    path: str
    added: int
    removed: int


async def changed_files(workspace: Path, base: str) -> list[FileChange]:
    """Files that differ between ``base`` and the working tree (staged everything first)."""
    await git("add", "-A", cwd=workspace)
    out = await git("diff", "--cached", "--numstat", base, cwd=workspace)
    files = []
    for line in out.splitlines():
        added, removed, path = line.split("\t", 2)
        files.append(FileChange(path, int(added) if added.isdigit() else 0,
                                int(removed) if removed.isdigit() else 0))
    return files


async def refusal(workspace: Path, base: str, files: list[FileChange]) -> str | None:
    """Why this change must not be pushed, or None."""
    workflows = [f.path for f in files if f.path.startswith(".github/workflows/")]
    if workflows:
        return (f"the change edits {', '.join(workflows)}; Handoff never pushes changes to "
                "GitHub Actions workflows (the App has no workflows permission)")
    diff = await git("diff", "--cached", "-U0", base, cwd=workspace)
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++") and SECRET_LIKE.search(line):
            return "the change adds a line that looks like a secret (a token or private key)"
    return None


def review_notes(files: list[FileChange], regression: bool) -> tuple[str, list[str]]:
    """What a reviewer should check first, and the risky parts of the change."""
    code = [f for f in files if not TEST_PATH.search(f.path)]
    biggest = max(code or files, key=lambda f: f.added + f.removed)
    check_first = f"`{biggest.path}`, the largest change (+{biggest.added} −{biggest.removed})"
    risks = []
    if regression:
        risks.append("tests that passed on the base commit fail after the change")
    risks += [f"`{f.path}` is build, dependency or CI configuration" for f in files
              if RISKY.search(f.path)]
    removed = [f for f in files if f.removed > f.added and f.removed >= 20]
    risks += [f"`{f.path}` loses {f.removed} lines" for f in removed]
    if not any(TEST_PATH.search(f.path) for f in files):
        risks.append("no test file was added or changed")
    return check_first, risks or ["none found by Handoff's checks; read the diff all the same"]
