"""Which test command a job runs: the one the repository configured, else one found from its
files at the base commit (``testrun`` reads single projects, ``monorepos`` splits npm
workspaces and Go modules into parts)."""

from __future__ import annotations

from bot.executor.gitops import Checkout
from bot.executor.monorepos import in_parts
from bot.executor.testrun import (
    INTERESTING,
    TestCommand,
    _package_folders,
    _workflow_hints,
    discover_from,
    monorepo_command,
)


async def discover(co: Checkout, rev: str, configured: str | None) -> TestCommand | None:
    """The configured test command, else one found from the repository's files at ``rev``."""
    if configured:
        return TestCommand(configured, "set as `test_command` in `.github/handoff.yml`")
    listing = await co.git("ls-tree", "-z", "--name-only", rev)
    names = {n for n in listing.split("\0") if n}

    async def read(path: str) -> str:
        return (await co.read_blob(rev, path) if path in names else None) or ""

    hints = await _workflow_hints(co, rev, names)
    files = {n: await read(n) for n in names if n in INTERESTING}
    found = discover_from(names, files, hints)
    if found is None and (packages := await _package_folders(co, rev, names)):
        found = monorepo_command(packages)
    return await in_parts(co, rev, names, files, hints, found)
