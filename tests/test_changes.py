"""Checks on the agent's change before anything is pushed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bot.config import PROMPTS
from bot.executor.changes import changed_files, leaves_repo, refusal
from bot.executor.gitops import Checkout
from bot.reporter.pull_request import EXPECTATION_CHANGED, review_notes
from bot.reporter.templates import Templates


def repo(tmp_path: Path) -> tuple[Checkout, str]:
    """A work tree with one commit, its git directory kept apart as a job's is."""
    co = Checkout(tmp_path / "git", tmp_path / "ws")
    co.work_tree.mkdir()
    subprocess.run(["git", "init", "-q", f"--separate-git-dir={co.git_dir}",
                    str(co.work_tree)], check=True)
    (co.work_tree / ".git").unlink()
    (co.work_tree / "app.py").write_text("x = 1\n")
    git = ["git", f"--git-dir={co.git_dir}", f"--work-tree={co.work_tree}"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "base"],
                   check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return co, sha


async def test_workflow_changes_are_refused(tmp_path: Path) -> None:
    co, base = repo(tmp_path)
    ws = co.work_tree
    (ws / ".github/workflows").mkdir(parents=True)
    (ws / ".github/workflows/ci.yml").write_text("on: push\n")
    files = await changed_files(co, base)
    assert [f.path for f in files] == [".github/workflows/ci.yml"]
    why = await refusal(co, base, files)
    assert why and ".github/workflows/ci.yml" in why


async def test_secret_like_lines_are_refused(tmp_path: Path) -> None:
    co, base = repo(tmp_path)
    (co.work_tree / "app.py").write_text("x = 1\nTOKEN = 'ghp_" + "a1B2" * 9 + "'\n")
    files = await changed_files(co, base)
    why = await refusal(co, base, files)
    assert why and "looks like a secret" in why


async def test_ordinary_change_passes_and_gets_review_notes(tmp_path: Path) -> None:
    co, base = repo(tmp_path)
    (co.work_tree / "app.py").write_text("x = 2\n")
    (co.work_tree / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    files = await changed_files(co, base)
    assert await refusal(co, base, files) is None
    check_first, risks = review_notes(files, regression=True)
    assert "app.py" in check_first or "pyproject.toml" in check_first
    assert any("tests that passed" in r for r in risks)
    assert any("pyproject.toml" in r for r in risks)
    assert any("no test file" in r for r in risks)


async def test_renamed_or_oddly_named_workflows_are_refused(tmp_path: Path) -> None:
    co, base = repo(tmp_path)
    (co.work_tree / "ci-template.yml").write_text("on: push\n")
    subprocess.run(["git", f"--git-dir={co.git_dir}", f"--work-tree={co.work_tree}", "add",
                    "-A"], check=True)
    subprocess.run(["git", f"--git-dir={co.git_dir}", f"--work-tree={co.work_tree}", "-c",
                    "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "t"], check=True)
    base = subprocess.run(["git", f"--git-dir={co.git_dir}", "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (co.work_tree / ".github/workflows").mkdir(parents=True)
    (co.work_tree / "ci-template.yml").rename(co.work_tree / ".github/workflows/ci.yml")
    (co.work_tree / ".github/workflows/\u00e9.yml").write_text("on: push\n")
    files = await changed_files(co, base)
    why = await refusal(co, base, files)
    assert why and ".github/workflows/ci.yml" in why and "\u00e9.yml" in why


async def test_symlinks_out_of_the_repository_and_gitlinks_are_refused(tmp_path: Path) -> None:
    co, base = repo(tmp_path)
    (co.work_tree / "docs").mkdir()
    (co.work_tree / "docs/ok.md").symlink_to("../app.py")
    files = await changed_files(co, base)
    assert await refusal(co, base, files) is None
    (co.work_tree / "docs/env").symlink_to("../../../../proc/self/environ")
    files = await changed_files(co, base)
    why = await refusal(co, base, files)
    assert why and "docs/env" in why and "outside the repository" in why
    (co.work_tree / "docs/env").unlink()
    nested = co.work_tree / "vendor"
    subprocess.run(["git", "init", "-q", str(nested)], check=True)
    (nested / "f").write_text("x")
    subprocess.run(["git", "-C", str(nested), "add", "f"], check=True)
    subprocess.run(["git", "-C", str(nested), "-c", "user.name=a", "-c", "user.email=a@b",
                    "commit", "-qm", "n"], check=True)
    files = await changed_files(co, base)
    why = await refusal(co, base, files)
    assert why and "embedded git repository" in why


def test_leaves_repo() -> None:
    assert leaves_repo("a.md", "/etc/shadow")
    assert leaves_repo("a.md", "../x")
    assert leaves_repo("d/a.md", "../../x")
    assert not leaves_repo("d/a.md", "../x")
    assert not leaves_repo("d/a.md", "./e/../f")


async def test_leftovers_stay_out_new_files_are_told_apart_and_changed_expectations_named(
        tmp_path: Path) -> None:
    co, base = repo(tmp_path)
    git = ["git", f"--git-dir={co.git_dir}", f"--work-tree={co.work_tree}"]
    (co.work_tree / "test_app.py").write_text("from app import x\n\n\ndef test_x():\n"
                                              "    assert x == 1\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "t"],
                   check=True)
    base = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (co.work_tree / "app.py").write_text("x = 2\n")
    (co.work_tree / "test_app.py").write_text("from app import x\n\n\ndef test_x():\n"
                                              "    assert x == 2\n")
    (co.work_tree / "reproduce_bug.py").write_text("from app import x\nprint(x)\n" * 30)
    for leftover in ("app.py.orig", "app.py.rej", "app.py.bak", "app.py.backup",
                     "app.py.fixed"):
        (co.work_tree / leftover).write_text("x = 1\n")
    files = await changed_files(co, base)
    assert {f.path: f.new for f in files} == {"app.py": False, "test_app.py": False,
                                             "reproduce_bug.py": True}
    assert await changed_files(co, base) == files  # excluded for good, not just this once
    check_first, risks = review_notes(files, regression=False)
    assert check_first.startswith("`app.py`")  # the fix, not the bigger scratch script
    assert f"`test_app.py`: {EXPECTATION_CHANGED}" in risks
    text = Templates(PROMPTS).render("review_summary", check_first=check_first, risks=risks,
                              files=files)
    assert "**Files changed** (2):" in text and "**Files added** (1):\n- `reproduce_bug.py`" \
        in text
