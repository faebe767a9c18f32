"""The ci-fix step reading a commit's checks from the simulator: the checks that matter (branch
protection's required ones, else all but Handoff's own), their annotations and job log, the
commit statuses, the base branch's reds, and a wait that ends."""

from __future__ import annotations

import time
from pathlib import Path

from sim import app_client, simulator

from bot.executor.ci import read_checks, red_on_base
from bot.github.checks import ChecksClient
from devkit.simulator.git import git as simgit

REPO = "octo/widgets"
FAIL = {"result": "fail", "annotations": [{"path": "a.py", "start_line": 2,
                                           "message": "E501"}],
        "log": "setup\n##[error]a.py:2 E501\ndone\n"}


async def test_the_checks_that_matter_and_what_they_say(tmp_path: Path) -> None:
    async with simulator(tmp_path) as sim:
        sim.add_repo(REPO, {"a.py": "x = 1\n"})
        sim.ci.delay = 0.0
        sim.ci.script(REPO, {"lint": FAIL, "spell": "fail", "tests": "pass",
                             "ci/legacy": {"result": "fail", "status": True,
                                           "summary": "build broke"}})
        simgit("branch", "feature", "main", cwd=sim.get_repo(REPO).path)
        sha = sim.push(REPO, "feature", {"a.py": "x = 2\n"}, "Change", "alice")
        sim.ci.run_branch(REPO, "main")
        await sim.settle()
        app = app_client(sim)
        try:
            inst = next(iter(sim.world.installations))
            # Handoff's own failed check run never counts.
            await app.repo(inst, REPO).create_check_run(
                name="Handoff", head_sha=sha, status="completed", conclusion="failure",
                output={"title": "t", "summary": "s"})
            gh = ChecksClient(app, inst, REPO)
            checks = await read_checks(gh, sha, "handoff", None, time.time())
            by_name = {c.name: c for c in checks.failed}
            assert set(by_name) == {"lint", "spell", "ci/legacy"}
            lint = by_name["lint"]
            assert lint.annotations[0]["message"] == "E501" and lint.app == "github-actions"
            assert lint.log.startswith("setup\n##[error]a.py:2 E501")
            assert lint.why() == "a.py:2: E501"
            assert by_name["ci/legacy"].why() == "build broke"
            # Branch protection names the required ones: only they count.
            sim.ci.protect(REPO, "main", ["lint", "tests"])
            required = await gh.required_checks("main")
            checks = await read_checks(gh, sha, "handoff", required, time.time())
            assert [c.name for c in checks.failed] == ["lint"]
            # A ruleset's "require status checks" rule counts beside classic protection.
            sim.ci.ruleset(REPO, "main", ["ci/legacy"])
            required = await gh.required_checks("main")
            assert required == ["lint", "tests", "ci/legacy"]
            checks = await read_checks(gh, sha, "handoff", required, time.time())
            assert [c.name for c in checks.failed] == ["lint", "ci/legacy"]
            # The same checks fail on main: not this branch's to fix.
            assert await red_on_base(gh, "main", ["lint", "spell"]) == {"lint", "spell"}
        finally:
            await app.close()


async def test_a_hung_check_is_waited_for_until_the_deadline_only(tmp_path: Path) -> None:
    async with simulator(tmp_path) as sim:
        sim.add_repo(REPO, {"a.py": "x = 1\n"})
        sim.ci.delay = 0.0
        sim.ci.script(REPO, {"lint": FAIL, "slow": "hang"})
        simgit("branch", "feature", "main", cwd=sim.get_repo(REPO).path)
        sha = sim.push(REPO, "feature", {"a.py": "x = 2\n"}, "Change", "alice")
        await sim.settle()
        app = app_client(sim)
        try:
            gh = ChecksClient(app, next(iter(sim.world.installations)), REPO)
            start = time.monotonic()
            checks = await read_checks(gh, sha, "handoff", None, time.time() + 1.0)
            waited = time.monotonic() - start
            assert 1.0 <= waited < 5.0
            assert checks.pending == ["slow"] and [c.name for c in checks.failed] == ["lint"]
        finally:
            await app.close()


async def test_a_ruleset_alone_names_the_required_checks(tmp_path: Path) -> None:
    """A repository protected only by a ruleset (no classic branch protection)."""
    async with simulator(tmp_path) as sim:
        sim.add_repo(REPO, {"a.py": "x = 1\n"})
        app = app_client(sim)
        try:
            gh = ChecksClient(app, next(iter(sim.world.installations)), REPO)
            assert await gh.required_checks("main") is None
            sim.ci.ruleset(REPO, "main", ["build", "test"])
            assert await gh.required_checks("main") == ["build", "test"]
        finally:
            await app.close()
