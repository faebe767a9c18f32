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


def go_modules(tree: list[str]) -> list[str]:
    """The folders of a tree's ``go.mod`` files (``.`` for the root's), but those ``./...``
    skips (``vendor/``, ``testdata/``...) and those no shell may name."""
    found = sorted(p.removesuffix("go.mod").rstrip("/") or "." for p in tree
                   if (p == "go.mod" or p.endswith("/go.mod")) and not GO_SKIPPED.search("/" + p))
    return [m for m in found if m == "." or testparts.safe_dir(m)]


def with_tests(modules: list[str], tree: list[str]) -> list[str]:
    """The modules with Go tests of their own (``_test.go`` files not in a nested module)."""
    def owner(folder: str) -> str:
        while folder not in modules and folder != ".":
            folder = folder.rsplit("/", 1)[0] if "/" in folder else "."
        return folder
    owners = {owner(p.rsplit("/", 1)[0] if "/" in p else ".") for p in tree
              if p.endswith("_test.go") and not GO_SKIPPED.search("/" + p)}
    return [m for m in modules if m in owners]


GO_REQUIRE = re.compile(r"^\s*require\s*(?:\(([^)]*)\)|(\S+))", re.MULTILINE)
GO_REPLACE = re.compile(r"^\s*(?:replace\s+)?(\S+)(?:\s+\S+)?\s+=>\s+(\S+)", re.MULTILINE)
GO_MODULE = re.compile(r"^\s*module\s+(\S+)", re.MULTILINE)


async def go_module_downloads(co: Checkout, rev: str) -> tuple[str, str] | None:
    """``go mod download`` in each Go module below the root with tests that requires modules
    from outside the repository (the root's own ``go.mod`` is the usual setup's), so its tests
    run without network, and why; None when there is none."""
    listing = await co.git("ls-tree", "-r", "-z", "--name-only", rev)
    tree = [p for p in listing.split("\0") if p]
    modules = go_modules(tree)
    tested = [m for m in with_tests(modules, tree) if m != "."][:testparts.MAX_PARTS]
    mods = {m: await co.read_blob(rev, f"{m}/go.mod") or "" for m in modules if m != "."}
    own = {m.group(1) for text in mods.values() if (m := GO_MODULE.search(text))}
    if "go.mod" in tree and (root := GO_MODULE.search(await co.read_blob(rev, "go.mod") or "")):
        own.add(root.group(1))
    needing = [m for m in tested if external_requirements(mods[m], own)]
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
