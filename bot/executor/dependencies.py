"""The setup a repository needs when it names none: install the dependencies it declares.

Read from git objects of the default branch, like every repository file the host reads. A
repository that wants no setup says ``setup_command: ""`` in ``.github/handoff.yml``.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import tomllib
from dataclasses import dataclass

from bot.executor.gitops import Checkout

REQUIREMENTS = ("requirements.txt", "requirements-dev.txt", "requirements-test.txt",
                "requirements_dev.txt", "requirements_test.txt")
TEST_EXTRAS = ("test", "tests", "testing", "dev")
READ = ("pyproject.toml", "package.json", "go.mod", "tox.ini", *REQUIREMENTS)


@dataclass(frozen=True)
class Setup:
    """A setup command and why it was chosen."""

    command: str
    reason: str


async def default_setup(co: Checkout, rev: str) -> Setup | None:
    """The dependency install for the repository at ``rev``, or None if it declares none."""
    listing = await co.git("ls-tree", "-z", "--name-only", rev)
    names = {n for n in listing.split("\0") if n}
    files = {n: (await co.read_blob(rev, n)) or "" for n in READ if n in names}
    return setup_from(names, files)


def setup_from(names: set[str], files: dict[str, str]) -> Setup | None:
    """The install commands for these top-level file ``names`` and texts, joined."""
    steps = [s for s in (_python(names, files), _tox(files), _node(names, files), _go(files))
             if s]
    if not steps:
        return None
    return Setup(" && ".join(s.command for s in steps), "; ".join(s.reason for s in steps))


def _python(names: set[str], files: dict[str, str]) -> Setup | None:
    requirements = [n for n in REQUIREMENTS if files.get(n, "").strip()]
    if requirements:
        args = " ".join(f"-r {shlex.quote(n)}" for n in requirements)
        return Setup(f"pip install {args}", f"the repository lists its Python dependencies "
                     f"in {', '.join(f'`{n}`' for n in requirements)}")
    try:
        project = tomllib.loads(files.get("pyproject.toml", "")).get("project") or {}
    except tomllib.TOMLDecodeError:
        return None
    extras = project.get("optional-dependencies") or {}
    extra = next((e for e in TEST_EXTRAS if e in extras), None)
    if not project.get("dependencies") and extra is None:
        return None
    target = f".[{extra}]" if extra else "."
    return Setup(f"pip install -e {shlex.quote(target)}",
                 "`pyproject.toml` declares the project's dependencies"
                 + (f" and a `{extra}` extra" if extra else ""))


def _tox(files: dict[str, str]) -> Setup | None:
    """The deps of tox's ``[testenv]``: tox cannot run in the sandbox, so its test command runs
    directly (``testrun``) and needs them installed."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(files.get("tox.ini", ""))
    except configparser.Error:
        return None
    deps = [d.strip() for d in parser.get("testenv", "deps", fallback="").splitlines()]
    deps = [d for d in deps if d and not d.startswith(("-", "#")) and not re.search(r"[{}]", d)]
    if not deps:
        return None
    return Setup(f"pip install {' '.join(shlex.quote(d) for d in deps)}",
                 "tox's `[testenv]` in `tox.ini` needs these to run its tests")


def _node(names: set[str], files: dict[str, str]) -> Setup | None:
    try:
        package = json.loads(files.get("package.json") or "{}")
    except json.JSONDecodeError:
        return None
    if not isinstance(package, dict) or not (package.get("dependencies") or
                                             package.get("devDependencies")):
        return None
    if "package-lock.json" in names:
        return Setup("npm ci", "`package.json` declares dependencies, locked in "
                     "`package-lock.json`")
    return Setup("npm install", "`package.json` declares dependencies")


def _go(files: dict[str, str]) -> Setup | None:
    if "require" not in files.get("go.mod", ""):
        return None
    return Setup("go mod download", "`go.mod` requires modules")
