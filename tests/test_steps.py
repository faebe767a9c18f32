"""Each step of a job called on its own, with the local sandbox backend, a real git repository
served by the GitHub simulator, and a real SQLite store: ``prepare``, ``write_spec``, ``judge``
and ``deliver`` take what they need as arguments (never from the job's record) and return
their typed results, which the runner records."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_fixtures import CALC_WITH_TESTS, TEST_COMMAND

from bot.config import Settings
from bot.executor.agent.loop import AgentResult
from bot.executor.briefing import write_spec
from bot.executor.delivery import deliver
from bot.executor.prepare import prepare
from bot.executor.run import Run
from bot.executor.sandbox.local import LocalBackend
from bot.executor.steps import Prepared
from bot.executor.testrun import TestCommand, run_tests
from bot.executor.work import judge
from bot.executor.workspace import Workspaces
from bot.github.client import GitHubApp
from bot.jobs.outcome import JobFailed
from bot.jobs.record import JobRecord
from bot.jobs.spend import Spend
from bot.jobs.store import Store
from bot.reporter.templates import Templates
from devkit.simulator import Simulator
from devkit.simulator.outage import served

REPO = "acme/calc"
SECRET = "steps-secret"


@dataclass
class World:
    sim: Simulator
    run: Run
    workspaces: Workspaces
    bare: Path


@pytest.fixture
async def world(tmp_path: Path, store: Store) -> AsyncIterator[World]:
    sim = Simulator(tmp_path / "github", webhook_secret=SECRET)
    repo = sim.add_repo(REPO, CALC_WITH_TESTS)
    number = sim.open_issue(REPO, "add() is wrong", "add(2, 3) should be 5", "acme").number
    async with served(sim) as url:
        github = GitHubApp(str(sim.world.app_id), sim.private_key, url)
        job_id = await store.write(lambda conn: store.insert_job(
            conn, kind="implement", repo=REPO, issue_number=number, requested_by="acme",
            installation_id=repo.installation_id))
        job = await store.claim("steps", lease_seconds=300)
        assert job is not None and job.id == job_id and job.installation_id is not None
        run = Run(job, github.repo(job.installation_id, REPO), store, job.result)
        try:
            yield World(sim, run, Workspaces(tmp_path / "data", 0), repo.path)
        finally:
            await run.closing.aclose()
            await github.close()


def branch_head(bare: Path, branch: str) -> str:
    return subprocess.run(["git", "--git-dir", str(bare), "rev-parse", f"refs/heads/{branch}"],
                          capture_output=True, text=True, check=True).stdout.strip()


async def prepared(w: World) -> Prepared:
    return await prepare(w.run, w.workspaces, ["default", "bug"], "agent")


async def test_prepare_checks_out_the_branch_and_reads_the_default_branch(world: World
                                                                          ) -> None:
    p = await prepared(world)
    assert p.branch.startswith("agent/issue-") and p.branch.endswith("-add-is-wrong")
    assert p.base == "main" and p.base_sha == branch_head(world.bare, "main")
    assert p.start_sha == p.base_sha  # a new branch starts at the default branch
    assert p.config.test_command == TEST_COMMAND  # from .github/handoff.yml on main
    assert p.inputs.issue["title"] == "add() is wrong" and p.inputs.repo == REPO
    assert (p.checkout.work_tree / "calc.py").read_text() == CALC_WITH_TESTS["calc.py"]
    # A step leaves its findings to the runner to record (it times its stages only).
    assert world.run.record.with_(timings={}) == JobRecord()
    record = JobRecord()
    p.record(record)  # what a job that resumes needs: its branch and base
    assert (record.delivery.branch, record.delivery.base, record.delivery.base_sha) == \
        (p.branch, "main", p.base_sha)


async def test_write_spec_takes_the_tests_and_their_baseline_as_arguments(world: World
                                                                          ) -> None:
    p = await prepared(world)
    box = await LocalBackend().start(world.run.job.id, p.checkout.work_tree)
    world.run.closing.push_async_callback(box.close)
    before = await run_tests(box, TEST_COMMAND, "before")
    templates = Templates(Settings().prompts_dir)
    briefed = await write_spec(world.run, p, templates, world.run.store, {},
                               TestCommand(TEST_COMMAND, "set"), before)
    assert briefed.template == "default" and briefed.answer is None
    assert f"Run the tests with `{TEST_COMMAND}`" in briefed.spec
    assert f"Before your change they ended: {before.line()}." in briefed.spec
    assert "add(2, 3) should be 5" in briefed.spec
    beside = await write_spec(world.run, p, templates, world.run.store, {},
                              TestCommand(TEST_COMMAND, "set"))  # the baseline runs beside
    assert "Before your change" not in beside.spec
    none = await write_spec(world.run, p, templates, world.run.store, {})
    assert "## Tests" not in none.spec
    record = JobRecord()
    briefed.record(record, p.inputs)
    assert record.inputs.template == "default" and record.inputs.seen == p.inputs.seen


async def test_judge_compares_the_tests_after_the_change_with_the_base(world: World) -> None:
    p = await prepared(world)
    box = await LocalBackend().start(world.run.job.id, p.checkout.work_tree)
    world.run.closing.push_async_callback(box.close)
    before = await run_tests(box, TEST_COMMAND, "before")
    calc = p.checkout.work_tree / "calc.py"
    calc.write_text(calc.read_text().replace("return a - b", "return a + b"))
    judged = await judge(world.run, box, TestCommand(TEST_COMMAND, "set"), before,
                         world.run.store)
    assert not before.ok and judged.after is not None and judged.after.ok
    assert judged.verdict.conclusion == "success" and not judged.verdict.regression
    assert judged.verdict.fixed == ["test_calc.test_add"]
    record = JobRecord()
    judged.record(record)
    assert record.verdict == judged.verdict  # stored as its type
    assert (record.tests.before, record.tests.after) == (before.line(), judged.after.line())


async def test_judge_weighs_the_evidence_by_the_template_it_is_given(world: World) -> None:
    """Passing tests that prove nothing new: unproven for a fix, ready for a refactor."""
    p = await prepared(world)
    calc = p.checkout.work_tree / "calc.py"
    calc.write_text(calc.read_text().replace("return a - b", "return a + b"))
    box = await LocalBackend().start(world.run.job.id, p.checkout.work_tree)
    world.run.closing.push_async_callback(box.close)
    before = await run_tests(box, TEST_COMMAND, "before")
    tests, store = TestCommand(TEST_COMMAND, "set"), world.run.store
    fix = await judge(world.run, box, tests, before, store, template="default")
    refactor = await judge(world.run, box, tests, before, store, template="refactor")
    assert before.ok and fix.verdict.conclusion == "neutral" and not fix.verdict.evidence
    assert refactor.verdict.conclusion == "success"
    # Tests that cannot run after a setup that failed: the verdict names the setup.
    missing = TestCommand("python -m no_such_runner", "set")
    broken = await run_tests(box, missing.command, "before")
    warned = await judge(world.run, box, missing, broken, store,
                         setup_warning="`pip install` ended with exit 1")
    assert not broken.ok and not warned.verdict.tests_run
    assert "`pip install` ended with exit 1" in " ".join(warned.verdict.risks)


async def test_deliver_commits_as_the_app_and_pushes_the_branch(world: World) -> None:
    p = await prepared(world)
    calc = p.checkout.work_tree / "calc.py"
    calc.write_text(calc.read_text().replace("return a - b", "return a + b"))
    outcome = AgentResult(True, "add() adds now", "", Spend())
    settings = Settings(app_id=str(world.sim.world.app_id))
    pushed = await deliver(world.run, p, outcome, settings, world.workspaces)
    assert pushed.head == branch_head(world.bare, p.branch) != p.start_sha
    assert [(f.path, f.added, f.removed) for f in pushed.files] == [("calc.py", 1, 1)]
    assert world.run.record.delivery.head_sha == pushed.head
    log = subprocess.run(["git", "--git-dir", str(world.bare), "log", "-1", "--format=%an%n%B",
                          pushed.head], capture_output=True, text=True, check=True).stdout
    assert log.startswith(settings.bot_login) and f"Handoff job {world.run.job.id} for #" in log


async def test_deliver_checks_the_conflicts_it_is_given(world: World) -> None:
    """A /rebase's conflicted files, given to ``deliver``: one still marked stops the push;
    resolved ones are named first in the summary it returns."""
    p = await prepared(world)
    calc = p.checkout.work_tree / "calc.py"
    fixed = calc.read_text().replace("return a - b", "return a + b")
    calc.write_text(f"<<<<<<< HEAD\n{fixed}=======\n{calc.read_text()}>>>>>>> main\n")
    outcome = AgentResult(True, "add() adds now", "", Spend())
    settings = Settings(app_id=str(world.sim.world.app_id))
    with pytest.raises(JobFailed, match="conflict markers in `calc.py`"):
        await deliver(world.run, p, outcome, settings, world.workspaces, ["calc.py"])
    assert branch_head(world.bare, "main") == p.base_sha
    calc.write_text(fixed)
    pushed = await deliver(world.run, p, outcome, settings, world.workspaces, ["calc.py"])
    assert pushed.summary == "Merged `main` into the branch; resolved conflicts in " \
        "`calc.py`.\n\nadd() adds now"
    assert world.run.record.summary == pushed.summary  # kept with the push, for a resume
