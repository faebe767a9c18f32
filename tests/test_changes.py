"""Checks on the agent's change before anything is pushed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bot.changes import changed_files, refusal, review_notes


def repo(tmp_path: Path) -> tuple[Path, str]:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "app.py").write_text("x = 1\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=a", "-c", "user.email=a@b",
                    "commit", "-qm", "base"], check=True)
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return tmp_path, sha


async def test_workflow_changes_are_refused(tmp_path: Path) -> None:
    ws, base = repo(tmp_path)
    (ws / ".github/workflows").mkdir(parents=True)
    (ws / ".github/workflows/ci.yml").write_text("on: push\n")
    files = await changed_files(ws, base)
    assert [f.path for f in files] == [".github/workflows/ci.yml"]
    why = await refusal(ws, base, files)
    assert why and ".github/workflows/ci.yml" in why


async def test_secret_like_lines_are_refused(tmp_path: Path) -> None:
    ws, base = repo(tmp_path)
    (ws / "app.py").write_text("x = 1\nTOKEN = 'ghp_" + "a1B2" * 9 + "'\n")
    files = await changed_files(ws, base)
    why = await refusal(ws, base, files)
    assert why and "looks like a secret" in why


async def test_ordinary_change_passes_and_gets_review_notes(tmp_path: Path) -> None:
    ws, base = repo(tmp_path)
    (ws / "app.py").write_text("x = 2\n")
    (ws / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    files = await changed_files(ws, base)
    assert await refusal(ws, base, files) is None
    check_first, risks = review_notes(files, regression=True)
    assert "app.py" in check_first or "pyproject.toml" in check_first
    assert any("tests that passed" in r for r in risks)
    assert any("pyproject.toml" in r for r in risks)
    assert any("no test file" in r for r in risks)
