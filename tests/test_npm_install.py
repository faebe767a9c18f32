"""A real ``npm install`` of a real dependency tree (mocha's, 71 packages) finishes through
Handoff's egress proxy in the real sandbox, from a local npm registry serving the packages
as registry.npmjs.org would (tests/conftest.py's ``local_npm``)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from test_repo_shapes import NODE_MOCHA, edit, handed_over, pr_and_check

from devkit.npm_registry import Registry
from devkit.stack import stack

pytestmark = pytest.mark.podman

INSTALL = "npm install --ignore-scripts --no-audit --no-fund"
MOCHA_TREE = 71  # mocha 10 and its dependencies, fsevents (macOS only) aside
PROBE = ("node -p \"'installed ' + Object.keys(require('./node_modules/.package-lock.json')"
         ".packages).length + ' packages'\" && ls node_modules/.bin/mocha")


async def test_npm_install_of_dozens_of_packages_finishes_through_the_egress_proxy(
        local_npm: Registry, tmp_path: Path) -> None:
    script = [{"tool": "bash", "args": {"command": PROBE}}, *edit(*NODE_MOCHA.fix, "Fixed.")]
    started = time.monotonic()
    async with stack(tmp_path, script, npm_registry=local_npm.url,
                     egress_allow_private=True) as s:
        job = await handed_over(s, NODE_MOCHA, tmp_path)
        body, check = pr_and_check(s)
        seen = next(str(r) for r in s.model.requests if "installed " in str(r))
    assert (job.result.setup.command, job.result.setup.warning) == (INSTALL, "")
    assert f"Setup: `{INSTALL}`" in body and "It failed" not in body, body
    # The agent found node_modules filled: every package of the tree, and mocha's command.
    assert f"installed {MOCHA_TREE} packages" in seen and "node_modules/.bin/mocha" in seen
    tarballs = {h for h in local_npm.hits if h.endswith(".tgz")}
    assert len(tarballs) == MOCHA_TREE and not any("fsevents" in t for t in tarballs)
    assert job.result.timings["setup"] < 60 and time.monotonic() - started < 180
    assert check.conclusion == "success"
    assert re.search(r"fail — 7 passed, 1 failed", body), body  # mocha ran, from node_modules
