"""Go modules in a repository: the folders a ``go.work`` uses, and the downloads the modules
below the root need (the usual setup downloads the root ``go.mod``'s only)."""

from __future__ import annotations

import re

from bot.executor import testparts
from bot.executor.gitops import Checkout
from bot.executor.testparts import listed

GO_SKIPPED = re.compile(r"(^|/)(vendor|testdata|node_modules|[._][^/]*)/")  # what ./... skips


def go_work_uses(text: str) -> list[str]:
    """The folders a ``go.work`` file's ``use`` directives name (one, or a block)."""
    found: list[str] = []
    for m in re.finditer(r"^\s*use\s*(?:\(([^)]*)\)|(\S+))", text, re.MULTILINE):
        block = m.group(1) if m.group(1) is not None else m.group(2)
        for line in block.splitlines():
            word = line.split("//", 1)[0].strip().strip('"`')
            if word:
                found.append(word.removeprefix("./").rstrip("/") or ".")
    return found


GO_REQUIRE = re.compile(r"^\s*require\s*(?:\(([^)]*)\)|(\S+))", re.MULTILINE)
GO_REPLACE = re.compile(r"^\s*(?:replace\s+)?(\S+)(?:\s+\S+)?\s+=>\s+(\S+)", re.MULTILINE)
GO_MODULE = re.compile(r"^\s*module\s+(\S+)", re.MULTILINE)


async def go_module_downloads(co: Checkout, rev: str) -> tuple[str, str] | None:
    """``go mod download`` in each Go module below the root that requires modules from
    outside the repository (the root's own ``go.mod`` is the usual setup's), so its tests run
    without network, and why; None when there is none."""
    listing = await co.git("ls-tree", "-r", "-z", "--name-only", rev)
    tree = [p for p in listing.split("\0") if p]
    paths = [p for p in tree if p.endswith("/go.mod") and not GO_SKIPPED.search("/" + p)
             and testparts.safe_dir(p.removesuffix("/go.mod"))][:testparts.MAX_PARTS]
    mods = {p.removesuffix("/go.mod"): await co.read_blob(rev, p) or "" for p in paths}
    own = {m.group(1) for text in mods.values() if (m := GO_MODULE.search(text))}
    if "go.mod" in tree and (root := GO_MODULE.search(await co.read_blob(rev, "go.mod") or "")):
        own.add(root.group(1))
    needing = sorted(d for d, text in mods.items() if external_requirements(text, own))
    if not needing:
        return None
    return (" && ".join(f"(cd {d} && go mod download)" for d in needing[:testparts.MAX_PARTS]),
            f"the Go modules in {listed(needing)} require modules from outside the repository")


def external_requirements(go_mod: str, own: set[str]) -> list[str]:
    """The modules a ``go.mod`` requires that are neither the repository's own nor replaced
    by a folder."""
    local = {m.group(1) for m in GO_REPLACE.finditer(go_mod)
             if m.group(2).startswith((".", "/"))}
    required = []
    for m in GO_REQUIRE.finditer(go_mod):
        block = m.group(1) if m.group(1) is not None else m.group(2)
        for line in block.splitlines() if m.group(1) is not None else [block]:
            words = line.split("//", 1)[0].split()
            if words:
                required.append(words[0])
    return [r for r in required if r not in own and r not in local]
