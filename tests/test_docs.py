"""What the README promises a person setting Handoff up."""

from __future__ import annotations

import re
from pathlib import Path

from bot.config import Settings

ROOT = Path(__file__).parent.parent


def test_readme_settings_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            listed |= set(re.findall(r"`([A-Z_]+)`", first))
    settings = {name.upper() for name in Settings.model_fields}
    assert settings - listed == set(), "settings missing from the README's table"
    assert listed - settings == set(), "the README's table names settings that do not exist"


def test_license_is_the_one_pyproject_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY" in text
