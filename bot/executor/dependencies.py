"""The setup a repository needs when it names none: install the dependencies it declares.

Read from git objects of the default branch, like every repository file the host reads. A
repository that wants no setup says ``setup_command: ""`` in ``.github/handoff.yml``.

The install reaches the network, so it runs nothing of the repository's: no lifecycle
scripts (``--ignore-scripts``), no builds (``--only-binary :all:``, and the project's own
``pip install -e .`` only after the network is closed). What it installs is what the default
branch declares: when the work tree's branch changed a manifest or build file, the whole setup
runs without network (``build_files_changed``).
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass

from bot.executor.gitops import Checkout
from bot.executor.gomodules import go_module_downloads

REQUIREMENTS = ("requirements.txt", "requirements-dev.txt", "requirements-test.txt",
                "requirements_dev.txt", "requirements_test.txt")
TEST_EXTRAS = ("test", "tests", "testing", "dev")
READ = ("pyproject.toml", "package.json", "go.mod", "tox.ini", *REQUIREMENTS)


# Files that decide what a setup installs or runs, at any depth (npm workspaces, nested
# requirement files), by name.
BUILD_FILES = (
    "package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml",
    "pnpm-workspace.yaml", ".npmrc", ".yarnrc", ".yarnrc.yml", "requirements*.txt",
    "requirements*.in", "constraints*.txt", "pyproject.toml", "setup.py", "setup.cfg",
    "MANIFEST.in", "Pipfile", "Pipfile.lock", "poetry.lock", "pdm.lock", "uv.lock", "tox.ini",
    "noxfile.py", "pip.conf", "go.mod", "go.sum", "go.work", "go.work.sum", "Makefile",
    "makefile", "GNUmakefile", "*.mk", "Cargo.toml", "Cargo.lock", "build.rs",
    "CMakeLists.txt", "configure", "*.gemspec", "Gemfile", "Gemfile.lock",
)
INCLUDE = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)[\s=]+(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Setup:
    """A setup command and why it was chosen; ``offline`` runs after the network is closed
    (a build of the repository's own code)."""

    command: str
    reason: str
    offline: str = ""


async def default_setup(co: Checkout, rev: str) -> Setup | None:
    """The dependency install for the repository at ``rev``, or None if it declares none."""
    listing = await co.git("ls-tree", "-z", "--name-only", rev)
    names = {n for n in listing.split("\0") if n}
    files = {n: (await co.read_blob(rev, n)) or "" for n in READ if n in names}
    found = setup_from(names, files)
    if nested := await go_module_downloads(co, rev):  # Go modules below the root
        steps = [s for s in (found, Setup(*nested)) if s]
        found = Setup(" && ".join(s.command for s in steps), "; ".join(s.reason for s in steps),
                      found.offline if found else "")
    return found


def setup_from(names: set[str], files: dict[str, str]) -> Setup | None:
    """The install commands for these top-level file ``names`` and texts, joined."""
    steps = [s for s in (_python(names, files), _tox(files), _node(names, files), _go(files))
             if s]
    if not steps:
        return None
    return Setup(" && ".join(s.command for s in steps), "; ".join(s.reason for s in steps),
                 " && ".join(s.offline for s in steps if s.offline))


PIP = "pip install --only-binary :all:"  # wheels only: nothing is built while online
NPM_FLAGS = "--ignore-scripts --no-audit --no-fund"  # no scripts; no calls but the downloads


def _python(names: set[str], files: dict[str, str]) -> Setup | None:
    requirements = [n for n in REQUIREMENTS if files.get(n, "").strip()]
    if requirements:
        args = " ".join(f"-r {shlex.quote(n)}" for n in requirements)
        return Setup(f"{PIP} {args}", f"the repository lists its Python dependencies "
                     f"in {', '.join(f'`{n}`' for n in requirements)}")
    try:
        toml = tomllib.loads(files.get("pyproject.toml", ""))
    except tomllib.TOMLDecodeError:
        return None
    project = toml.get("project") or {}
    extras = project.get("optional-dependencies") or {}
    extra = next((e for e in TEST_EXTRAS if e in extras), None)
    if not project.get("dependencies") and extra is None:
        return None
    # The default branch's declared requirements, named on the command line: the work tree's
    # pyproject.toml is not read while the network is open.
    wanted = [*project.get("dependencies", []), *(extras.get(extra, []) if extra else []),
              *((toml.get("build-system") or {}).get("requires") or [])]
    own = [str(r) for r in wanted if isinstance(r, str) and not _names_project(r, project)]
    install = f"{PIP} {' '.join(shlex.quote(r) for r in own)}" if own else "true"
    return Setup(install, "`pyproject.toml` declares the project's dependencies"
                 + (f" and a `{extra}` extra" if extra else "") + "; the project itself is "
                 "installed after the network is closed",
                 "pip install --no-deps --no-build-isolation --no-index -e .")


def _names_project(requirement: str, project: dict[str, object]) -> bool:
    """A requirement on the project itself (``name[test]`` in its own extras)."""
    name = re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-") == str(project.get("name", "")).lower().replace(
        "_", "-")


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
    return Setup(f"{PIP} {' '.join(shlex.quote(d) for d in deps)}",
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
        return Setup(f"npm ci {NPM_FLAGS}", "`package.json` declares dependencies, locked "
                     "in `package-lock.json` (installed without running install scripts)")
    return Setup(f"npm install {NPM_FLAGS}", "`package.json` declares dependencies "
                 "(installed without running install scripts)")


def _go(files: dict[str, str]) -> Setup | None:
    if "require" not in files.get("go.mod", ""):
        return None
    return Setup("go mod download", "`go.mod` requires modules")


async def build_files_changed(co: Checkout, base_sha: str, command: str) -> list[str]:
    """The manifest and build files (``BUILD_FILES``, the requirement files the default
    branch's include, and the repository files ``command`` names) that the checked-out branch
    changed since it left the default branch: a setup with network must not run them."""
    fork = (await co.git("merge-base", base_sha, "HEAD")).strip()
    changed = await co.git("diff", "--name-only", "--no-renames", "-z", fork, "HEAD")
    watched = {p for p in await _included(co, base_sha)} | set(_paths_in(command))
    return sorted(p for p in changed.split("\0") if p and (
        p in watched or any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern)
                            for pattern in BUILD_FILES)))


async def _included(co: Checkout, rev: str) -> set[str]:
    """Files the default branch's top-level requirement files include (``-r``, ``-c``)."""
    found: set[str] = set()
    for name in REQUIREMENTS:
        text = await co.read_blob(rev, name) or ""
        found.update(m.removeprefix("./") for m in INCLUDE.findall(text))
    return found


def _paths_in(command: str) -> list[str]:
    """Words of a command that look like repository paths (``scripts/setup.sh``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return [w.removeprefix("./") for w in words
            if not w.startswith("-") and ("/" in w or "." in w) and not w.startswith("/")]
