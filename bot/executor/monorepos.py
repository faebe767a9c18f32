"""Monorepos beyond Python's: npm workspaces, Go workspaces (``go.work``) and repositories
with several ``go.mod`` files. Their runners do not cross the boundaries (a root ``go test
./...`` stops at a nested module; one TAP file cannot hold every workspace's run), so the
tests run folder by folder, as a command in parts (``testparts``).

Read from git objects of the base commit, as the rest of discovery.
"""

from __future__ import annotations

import json
import re

from bot.executor import testparts
from bot.executor.gitops import Checkout
from bot.executor.gomodules import go_modules, go_work_uses, with_tests
from bot.executor.testparts import Part, listed
from bot.executor.testrun import (
    GO_TEST_ALL,
    SHELL_OPERATORS,
    TestCommand,
    _npm_test_script,
    _reporter_args,
    workflow_services,
)
from bot.reporter.markdown import code

MAX_FOLDERS = 50
# A root `test` script that only hands over to the workspaces' own.
DELEGATES = re.compile(r"(npm|yarn)( run)? test\b.*\s(--workspaces|-ws)\b.*|yarn workspaces "
                       r"(foreach\s+(-\S+\s+)*)?run test\b.*|lerna run test\b.*")


async def in_parts(co: Checkout, rev: str, names: set[str], files: dict[str, str],
                   workflows: dict[str, str], found: TestCommand | None) -> TestCommand | None:
    """The test command in parts for a monorepo of npm workspaces or Go modules, else
    ``found``: it stands in for no command, or for the root's own npm or Go command."""
    if found is not None and not found.command.startswith(("npm test", "yarn test",
                                                           GO_TEST_ALL)):
        return found
    npm = found is None or found.command.startswith(("npm", "yarn"))
    go = found is None or found.command == GO_TEST_ALL
    tree = await _tree(co, rev)
    parts: list[Part] = []
    reasons: list[str] = []
    if npm and "package.json" in names and (ws := await _npm(co, rev, tree, files)):
        parts += ws[0]
        reasons.append(ws[1])
    if go and (mods := await _go(co, rev, tree, names)):
        parts += mods[0]
        reasons.append(mods[1])
    if not parts:
        return found
    services = workflow_services(workflows)
    why = "; ".join(reasons) + "; each part runs on its own and the counts are summed"
    if services:
        why += (f"; the CI workflows start services the sandbox does not have "
                f"({', '.join(code(s) for s in services)})")
    return TestCommand(testparts.joined(parts[:testparts.MAX_PARTS]), why, services=services)


async def _tree(co: Checkout, rev: str) -> list[str]:
    listing = await co.git("ls-tree", "-r", "-z", "--name-only", rev)
    return [p for p in listing.split("\0") if p]


def hands_over(script: str) -> bool:
    """Whether a root ``test`` script only runs the workspaces' own ``test`` scripts."""
    return bool(DELEGATES.fullmatch(script)) and not SHELL_OPERATORS.search(script)


def workspace_patterns(package_json: str) -> list[str]:
    """The ``workspaces`` globs of a root ``package.json`` (a list, or yarn's
    ``{"packages": [...]}``)."""
    try:
        data = json.loads(package_json)
    except ValueError:
        return []
    spaces = data.get("workspaces") if isinstance(data, dict) else None
    if isinstance(spaces, dict):
        spaces = spaces.get("packages")
    return [s for s in spaces if isinstance(s, str)] if isinstance(spaces, list) else []


def _glob(pattern: str) -> re.Pattern[str]:
    """A workspace glob as npm reads it (``*`` within a folder name, ``**`` across)."""
    pattern = pattern.strip().removeprefix("./").rstrip("/")
    out = ""
    for piece in re.split(r"(\*\*/?|\*|\?)", pattern):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            piece, re.escape(piece))
    return re.compile(out)


def workspace_folders(patterns: list[str], tree: list[str]) -> list[str]:
    """The folders with a ``package.json`` that the patterns name (``!`` ones left out)."""
    keep = [_glob(p) for p in patterns if p and not p.startswith("!")]
    drop = [_glob(p[1:]) for p in patterns if p.startswith("!")]
    folders = sorted(p.removesuffix("/package.json") for p in tree
                     if p.endswith("/package.json") and "node_modules/" not in p)
    return [f for f in folders if any(k.fullmatch(f) for k in keep) and
            not any(d.fullmatch(f) for d in drop)][:MAX_FOLDERS]


async def _npm(co: Checkout, rev: str, tree: list[str], files: dict[str, str]
               ) -> tuple[list[Part], str] | None:
    """Each npm workspace's ``test`` script as a part; those without one are left out, as
    ``npm test --workspaces --if-present`` leaves them."""
    root = files.get("package.json", "")
    patterns = workspace_patterns(root)
    script = _npm_test_script(root)
    if not patterns or (script and not hands_over(script)):
        return None
    tool = "yarn" if "yarn.lock" in tree else "npm"
    parts, without = [], []
    for folder in workspace_folders(patterns, tree):
        own = _npm_test_script(await co.read_blob(rev, f"{folder}/package.json") or "")
        if own and testparts.safe_dir(folder):
            parts.append(Part(folder, f"{tool} test{_reporter_args(own)[0]}"))
        else:
            without.append(folder)
    if not parts:
        return None
    why = (f"`package.json`'s workspaces ({', '.join(code(p) for p in patterns[:5])}): the "
           f"`test` script of each of {len(parts)} workspaces, in its folder")
    if script:
        why += f" (the root's `test` script, {code(script[:80])}, runs them all at once)"
    if without:
        one = len(without) == 1
        why += f"; {listed(without)} {'has' if one else 'have'} no `test` script and " \
            f"{'is' if one else 'are'} skipped"
    return parts, why


async def _go(co: Checkout, rev: str, tree: list[str], names: set[str]
              ) -> tuple[list[Part], str] | None:
    """``go test -json ./...`` in each Go module: those a root ``go.work`` uses, else every
    folder with a ``go.mod`` and Go tests of its own (when there is more than the root's)."""
    if "go.work" in names:
        text = await co.read_blob(rev, "go.work") or ""
        modules = [m for m in go_work_uses(text) if m == "." or testparts.safe_dir(m)]
        why = f"a Go workspace (`go.work` uses {listed(modules)})"
    else:
        modules = go_modules(tree)
        if modules in ([], ["."]):
            return None
        modules = with_tests(modules, tree)
        why = f"{len(modules)} Go modules with tests (`go.mod` in {listed(modules)}) and no " \
            "`go.work`"
    if not modules:
        return None
    parts = [Part("" if m == "." else m, GO_TEST_ALL) for m in modules[:MAX_FOLDERS]]
    return parts, why + ": `go test -json ./...` stops at a module's edge, so it runs in each"

