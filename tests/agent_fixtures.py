"""A small repository with a bug and a failing test, and a script that fixes it."""

from __future__ import annotations

from typing import Any

BUGGY_REPO = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "README.md": "# calc\n",
}
TEST_COMMAND = "python3 -m pytest -q -p no:cacheprovider"

FIX_SCRIPT: list[dict[str, Any]] = [
    {"tool": "bash", "args": {"command": TEST_COMMAND}, "usage": {"input": 1000, "output": 50}},
    {"tool": "view", "args": {"path": "calc.py"}, "usage": {"input": 1200, "output": 30}},
    {"tool": "edit", "args": {"path": "calc.py", "old_text": "return a - b",
                              "new_text": "return a + b"}, "usage": {"input": 1300, "output": 40}},
    {"tool": "bash", "args": {"command": TEST_COMMAND}, "usage": {"input": 1400, "output": 30}},
    {"tool": "finish", "args": {"summary": "add() subtracted; it now adds. test_add passes."},
     "usage": {"input": 1500, "output": 60}},
]

# The buggy repository with its test command configured, as most end-to-end tests use it.
CALC_WITH_TESTS = {**BUGGY_REPO, ".github/handoff.yml": f"test_command: {TEST_COMMAND}\n"}
