"""deploy/systemd/handoff.service as `systemd-analyze` judges it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "deploy/systemd/handoff.service"
pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                reason="needs systemd-analyze (apt-get install systemd)")


def installed_unit(tmp_path: Path) -> Path:
    """The unit with /opt/handoff pointing at this checkout (whose .venv has `handoff`, or
    the running Python's `handoff`)."""
    exe = ROOT / ".venv/bin/handoff"
    if not exe.exists():
        exe = Path(sys.executable).parent / "handoff"
    if not exe.exists():
        pytest.skip("no installed `handoff` command (scripts/install.sh)")
    text = UNIT.read_text().replace("/opt/handoff/.venv/bin/handoff", str(exe))
    unit = tmp_path / "handoff.service"
    unit.write_text(text)
    return unit


def test_unit_verifies_with_an_executable_exec_start(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    problems = [x for x in (result.stdout + result.stderr).splitlines()
                if "handoff.service" in x]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_unit_hardening_scores_ok_or_better(tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    found = re.search(r"Overall exposure level for handoff.service: ([\d.]+) (\w+)",
                      result.stdout)
    assert found, result.stdout + result.stderr
    assert found.group(2) in ("SAFE", "OK", "MEDIUM"), found.group(0)
    assert float(found.group(1)) <= 5.0
