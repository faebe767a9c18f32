"""Failures that used to end silently or wrongly (issue 12), each shown as a person sees it:
on the simulated GitHub, in `handoff jobs`, in the logs. Real parts throughout: the simulator
with its fault injection, SQLite files held by another connection, real Worker and reporter."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from helpers import json_log, name_their_ids
from sim import app_client, simulator
from test_load import HeldDatabase

from bot.executor.sandbox.base import PROCESS_ID
from bot.jobs.store import Job, LeaseLost, Store
from bot.jobs.worker import JobResult, LogReporter, UnconfiguredRunner, Worker
from bot.jobs.worker_settings import WorkerSettings
from bot.reporter.report import GitHubReporter
from devkit.simulator import Fault, Simulator
from devkit.simulator.git import git as simgit
from devkit.simulator.state import Comment
from devkit.stack import Stack, stack

sys.path.insert(0, str(Path(__file__).parent.parent))

ROOT = Path(__file__).parent.parent
REPO = "acme/calc"


async def ended(store: Store, repo: str, issue: int, installation_id: int | None,
                result: dict[str, object] | None = None) -> int:
    """A job that failed and whose report is due now."""
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo=repo, issue_number=issue, requested_by="acme",
        installation_id=installation_id))
    assert job_id is not None
    job = await store.claim("w0", 60)
    assert job is not None and job.id == job_id
    assert await store.finish(job_id, "w0", "failed", "the model API answered 500 three times",
                              "model-error", result or {}, job.lease_token)
    return job_id


def comments(sim: Simulator, repo: str, number: int) -> list[str]:
    return [c.body for c in sim.get_repo(repo).issues[number].comments]


def installation(sim: Simulator) -> int:
    return sim.get_repo(REPO).installation_id


async def test_reports_that_can_never_post_do_not_block_the_others(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Failure 1 and 8: 25 jobs of an archived repository, one whose installation was never
    named, and a later job whose report hits a 502 burst: the later one is posted, once; the
    others are marked unreportable, logged, counted and shown by `handoff jobs`."""
    async with simulator(tmp_path / "gh") as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        sim.add_repo("acme/old", {"README.md": "x\n"}).archived = True
        for n in range(1, 26):
            sim.open_issue("acme/old", f"Old {n}", "x", "acme")
            await ended(store, "acme/old", n, installation(sim))
        nowhere = await ended(store, REPO, 99, None)
        number = sim.open_issue(REPO, "Fix", "x", "acme").number
        late = await ended(store, REPO, number, installation(sim))
        sim.add_fault(Fault("5xx", 4, status=502, match=f"/issues/{number}/comments"))
        worker = Worker(store, UnconfiguredRunner(), GitHubReporter(app_client(sim)),
                        WorkerSettings(report_retry_seconds=0.2))
        with json_log() as lines:
            for _ in range(20):
                await worker.reports.pending()
                job = await store.get_job(late)
                if job and job.reported:
                    break
                await asyncio.sleep(0.25)
        assert job and job.reported, job
        [failure] = comments(sim, REPO, number)
        assert f"Handoff job {late} failed" in failure
        assert all(comments(sim, "acme/old", n) == [] for n in range(1, 26))
    assert await store.report_counts() == {"reported": 1, "pending": 0, "unreportable": 26}
    old = await store.get_job(1)
    assert old and old.unreportable and "archived" in old.report_error
    lost = await store.get_job(nowhere)
    assert lost and lost.unreportable and "no installation" in lost.report_error
    assert worker.unreportable_total == 26
    assert caplog.text.count("can never be reported on GitHub") == 26
    # every line logged while posting reports (GitHub's answers too) carries its job's id
    assert sum("can never be reported" in x["message"] for x in lines) == 26
    assert lines and all("job" in x for x in lines), [x for x in lines if "job" not in x]
    assert name_their_ids(lines) == []
    listed = subprocess.run(
        [sys.executable, "-m", "bot.cli", "jobs", "-n", "30"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HANDOFF_DATA_DIR": str(tmp_path / "d"),
             "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"},
        timeout=60)
    assert listed.stdout.count("NOT REPORTED, cannot be") == 26, listed.stdout + listed.stderr
    assert "0 pending, 26 unreportable" in listed.stdout


async def test_three_workers_post_each_report_once(tmp_path: Path) -> None:
    """Failure 3: three workers sweeping reports at once, GitHub answering slowly: one
    comment per job."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    stores = [await Store.open(url) for _ in range(3)]
    async with simulator(tmp_path / "gh") as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        for n in range(1, 9):
            await ended(stores[0], REPO, sim.open_issue(REPO, f"I{n}", "x", "acme").number,
                        installation(sim))
        sim.add_fault(Fault("slow", 10_000, delay=0.1))
        workers = [Worker(s, UnconfiguredRunner(), GitHubReporter(app_client(sim)))
                   for s in stores]
        await asyncio.gather(*(w.reports.pending() for w in workers))
        sim.world.faults.clear()
        for n in range(1, 9):
            assert len(comments(sim, REPO, n)) == 1, (n, comments(sim, REPO, n))
    assert await stores[0].report_counts() == {"reported": 8, "pending": 0, "unreportable": 0}
    for s in stores:
        await s.close()


async def test_a_failed_check_run_then_a_retry_posts_the_comment_once(
        store: Store, tmp_path: Path) -> None:
    """Failure 7: the failure comment went out, the check run did not (502s); the retry
    finds the comment by its hidden marker and posts only the check run."""
    async with simulator(tmp_path / "gh") as sim:
        repo = sim.add_repo(REPO, {"README.md": "x\n"})
        head = sim.get_repo(REPO)  # any commit of the repository will do as the head
        sha = simgit("rev-parse", "main", cwd=head.path).strip()
        number = sim.open_issue(REPO, "Fix", "x", "acme").number
        job_id = await ended(store, REPO, number, installation(sim),
                             {"head_sha": sha, "wip_branch": "main"})
        sim.add_fault(Fault("5xx", 4, status=502, match="/check-runs"))
        worker = Worker(store, UnconfiguredRunner(), GitHubReporter(app_client(sim)),
                        WorkerSettings(report_retry_seconds=0.3))
        await worker.reports.pending()
        job = await store.get_job(job_id)
        assert job and not job.reported and "502" in job.report_error
        await asyncio.sleep(0.4)
        await worker.reports.pending()
        job = await store.get_job(job_id)
        assert job and job.reported
        assert len(comments(sim, REPO, number)) == 1
        [check] = repo.check_runs.values()
        assert check.conclusion == "failure"


class SideEffects:
    """A job that acts (think: pushes) every 50 ms, noting who acted when."""

    def __init__(self, name: str, acts: list[tuple[str, float]], forever: bool) -> None:
        self.name, self.acts, self.forever = name, acts, forever

    async def run(self, job: Job) -> JobResult:
        for _ in range(10**6 if self.forever else 3):
            self.acts.append((self.name, time.monotonic()))
            await asyncio.sleep(0.05)
        return JobResult(summary=f"done by {self.name}")


async def test_a_worker_that_cannot_renew_stops_before_another_takes_over(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Failure 2: the database is locked past the lease. The first worker stops its job
    before the lease runs out, so the worker that takes it over never runs beside it; the
    first worker's writes are refused afterwards (its lease token is stale)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    first, second = await Store.open(url), await Store.open(url)
    acts: list[tuple[str, float]] = []
    job_id = await first.write(lambda conn: first.insert_job(
        conn, kind="implement", repo="o/r", issue_number=1, requested_by="a"))
    worker_a = Worker(first, SideEffects("A", acts, forever=True), LogReporter(),
                      WorkerSettings(lease_seconds=1.2, heartbeat_seconds=0.2))
    running = asyncio.create_task(worker_a.run_once())
    while not acts:
        await asyncio.sleep(0.01)
    claimed = await first.get_job(job_id)
    assert claimed and claimed.lease_token
    held = HeldDatabase(tmp_path / "shared.db")
    await asyncio.sleep(2.5)
    held.conn.rollback()
    taken = await second.claim("B", 60)  # at once, before the first worker's next beat
    taken_at = time.monotonic()
    assert taken and taken.id == job_id and taken.attempts == 2
    await asyncio.wait_for(running, 10)
    last_a = max(t for who, t in acts if who == "A")
    assert last_a < taken_at - 0.5, "the first worker went on after losing its lease"
    assert "stopping it before its lease runs out" in caplog.text
    with pytest.raises(LeaseLost):
        await first.update_held(job_id, claimed.lease_token, stage="pushing")
    assert not await first.holds(job_id, claimed.lease_token)
    await first.close()
    await second.close()


async def test_a_heartbeat_rides_out_a_short_lock(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Failure 2: a lock longer than a heartbeat but shorter than the lease costs nothing:
    the job ends on its first try."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    store = await Store.open(url)
    acts: list[tuple[str, float]] = []

    class Slow(SideEffects):
        async def run(self, job: Job) -> JobResult:
            await asyncio.sleep(2.0)
            return await super().run(job)

    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo="o/r", issue_number=1, requested_by="a"))
    worker = Worker(store, Slow("A", acts, forever=False), LogReporter(),
                    WorkerSettings(lease_seconds=2.5, heartbeat_seconds=0.2))
    running = asyncio.create_task(worker.run_once())
    await asyncio.sleep(0.3)
    held = HeldDatabase(tmp_path / "shared.db")
    held.release_after(1.0)
    job = await asyncio.wait_for(running, 20)
    assert job and job.id == job_id and job.state == "succeeded" and job.attempts == 1
    assert "stopping" not in caplog.text
    await store.close()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_odd_signed_deliveries_get_an_answer_and_are_recorded(
        db: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Failure 6: signed but odd payloads (non-object values, integers past 2^63 and 2^31,
    deep nesting, NUL characters, long event names): never a 5xx, always recorded."""
    import httpx
    from helpers import SECRET

    from bench.fuzz import deliveries
    from bot.receiver.web import create_app
    from bot.server import running
    from handlers import Context

    url = request.getfixturevalue("pg_url") if db == "postgres" else \
        f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
    store = await Store.open(url)
    if db == "postgres":  # the session's server is shared: start from no deliveries
        from bot.jobs.schema import deliveries as table
        from bot.jobs.schema import jobs
        await store.write(lambda conn: (conn.execute(table.delete()),
                                        conn.execute(jobs.delete())))
    statuses: dict[int, int] = {}
    ids: set[str] = set()
    async with running(create_app(store, SECRET, Context())) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as client:
        for headers, body in deliveries(400, SECRET, seed=7):
            resp = await client.post("/webhook", content=body, headers=headers)
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            if resp.status_code >= 400:
                assert resp.headers.get("content-type") == "application/json", (resp, resp.text)
                assert resp.json().get("error"), resp.text  # says why
            ids.add(headers["x-github-delivery"].decode("latin-1"))
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses.get(202, 0) > 200 and statuses.get(400, 0) > 10, statuses
    assert await store.count_deliveries() == len(ids)
    await store.close()


needs_podman = pytest.mark.podman


def fixable() -> dict[str, str]:
    from agent_fixtures import BUGGY_REPO, TEST_COMMAND
    return {**BUGGY_REPO, ".github/handoff.yml": f"test_command: {TEST_COMMAND}\n"}


async def until(s: Stack, predicate: Callable[[], Awaitable[bool]], timeout: float = 90
                ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached: {await s.store.list_jobs()}")


def status_comment(s: Stack, number: int) -> Comment:
    return next(c for c in s.sim.get_repo(REPO).issues[number].comments
                if "handoff:status" in c.body)


@needs_podman
async def test_a_pr_refused_after_the_push_says_what_was_pushed(tmp_path: Path) -> None:
    """Failure 4: the push went through, opening the PR did not (403): the comment says
    which branch holds the change, never "Nothing was pushed"."""
    from agent_fixtures import FIX_SCRIPT
    async with stack(tmp_path, FIX_SCRIPT) as s:
        s.sim.add_repo(REPO, fixable())
        number = s.sim.open_issue(REPO, "Fix add", "add is wrong", "acme").number
        s.sim.add_fault(Fault("5xx", 1, status=403, match=f"POST /repos/{REPO}/pulls"))
        s.sim.label_issue(REPO, number, "agent", "acme")
        job = await s.wait_job(lambda j: True)
        assert job.state == "failed" and job.category == "github-error"
        branch = job.result.delivery.pushed_branch
        failure = comments(s.sim, REPO, number)[-1]
        assert "Nothing was pushed" not in failure
        assert f"pushed to branch `{branch}`" in failure
        assert job.result.delivery.head_sha[:7] in failure
        assert "return a + b" in simgit("show", f"{branch}:calc.py",
                                        cwd=s.sim.get_repo(REPO).path)


@needs_podman
async def test_a_job_killed_between_push_and_pr_resumes_and_opens_the_pr(
        tmp_path: Path) -> None:
    """Failures 4 and 9: the worker dies while opening the PR, after the push. When the job
    is taken over, the status comment says it is resumed, and the job finds its pushed
    commit and opens the PR, without running the agent again."""
    from agent_fixtures import FIX_SCRIPT
    async with stack(tmp_path, FIX_SCRIPT, lease_seconds=3) as s:
        s.sim.add_repo(REPO, fixable())
        number = s.sim.open_issue(REPO, "Fix add", "add is wrong", "acme").number
        s.sim.add_fault(Fault("slow", 1, delay=8, match=f"POST /repos/{REPO}/pulls"))
        s.sim.label_issue(REPO, number, "agent", "acme")

        async def opening_pr() -> bool:
            return any(c["method"] == "POST" and c["path"].endswith("/pulls")
                       for c in s.sim.world.calls)

        await until(s, opening_pr)
        for task in list(s.worker.tasks):  # the worker dies here: no end is recorded
            task.cancel()
        asked = len(s.model.requests)
        job = await s.wait_job(lambda j: True, timeout=120)
        assert job.state == "succeeded", job.reason
        assert job.attempts == 2 and len(s.model.requests) == asked
        repo = s.sim.get_repo(REPO)
        [pr] = [i for i in repo.issues.values() if i.pull]
        assert pr.pull and pr.pull.head == job.result.delivery.pushed_branch
        status = status_comment(s, number)
        assert "Done" in status.body and f"/pull/{pr.number}" in status.body
        assert any("Resumed" in body for body in status.history), status.history


@needs_podman
async def test_sigterm_hands_running_jobs_back(tmp_path: Path) -> None:
    """Failure 5: a worker told to stop hands its running job back at once: the job is
    queued again at its stage, no attempt spent, its sandbox gone, and the status comment
    says it will resume."""
    slow = [{"tool": "bash", "args": {"command": "sleep 60"}},
            {"tool": "finish", "args": {"summary": "slept"}}]
    async with stack(tmp_path, slow) as s:
        s.sim.add_repo(REPO, fixable())
        number = s.sim.open_issue(REPO, "Slow", "x", "acme").number
        s.sim.label_issue(REPO, number, "agent", "acme")

        async def in_agent() -> bool:
            return any(j.stage == "agent" for j in await s.store.list_jobs()) and \
                bool(s.model.requests)

        await until(s, in_agent)
        await asyncio.sleep(1)  # the sandbox runs `sleep 60`
        s.worker.slots = 0  # what run_forever does once stopping: no new claims
        started = time.monotonic()
        await s.worker.hand_back()
        assert time.monotonic() - started < s.worker.settings.stop_seconds
        [job] = await s.store.list_jobs()
        assert job.state == "queued" and job.attempts == 0 and job.stage == "agent"
        assert job.lease_owner is None
        assert "will resume" in status_comment(s, number).body
        leftover = subprocess.run(
            ["podman", "ps", "-a", "--filter", f"label=handoff.job={job.id}", "--filter",
             f"label=handoff.process={PROCESS_ID}", "--format", "{{.Names}}"],
            capture_output=True, text=True).stdout
        assert leftover.strip() == ""


def resumable_script(sleep: float) -> list[dict[str, object]]:
    """The fix in step 1, a long command in step 2, the tests in step 3, then finish."""
    from agent_fixtures import TEST_COMMAND
    return [{"tool": "edit", "args": {"path": "calc.py", "old_text": "return a - b",
                                      "new_text": "return a + b"}},
            {"tool": "bash", "args": {"command": f"sleep {sleep:g}"}},
            {"tool": "bash", "args": {"command": TEST_COMMAND}},
            {"tool": "finish", "args": {"summary": "add() subtracted; it now adds."}}]


async def in_step(s: Stack, step: int) -> None:
    """Wait until the agent has asked the model for ``step`` (0 the first) and runs it."""
    async def asked() -> bool:
        return len(s.model.requests) > step

    await until(s, asked)
    await asyncio.sleep(0.5)


async def test_sigterm_lets_a_job_inside_the_grace_finish_and_report(tmp_path: Path) -> None:
    """Issue 20: stopping no longer hands back a job that would end within the shutdown
    grace: it finishes, its PR is open and reported before the worker is done stopping."""
    async with stack(tmp_path, resumable_script(3), sandbox="local", shutdown_grace=60) as s:
        s.sim.add_repo(REPO, fixable())
        number = s.label_new_issue(REPO, "Fix add", "add is wrong")
        await in_step(s, 1)
        s.worker.slots = 0  # what run_forever does once stopping: no new claims
        await s.worker.drain()
        [job] = await s.store.list_jobs()
        assert job.state == "succeeded" and job.reported and job.attempts == 1, job.reason
        [pr] = [i for i in s.sim.get_repo(REPO).issues.values() if i.pull]
        assert pr.pull and pr.pull.head == job.result.delivery.branch
        assert "will resume" not in status_comment(s, number).body
        assert not job.result.agent.checkpoint  # nothing left to resume


async def test_a_job_past_the_grace_is_handed_back_and_goes_on_from_its_saved_step(
        tmp_path: Path) -> None:
    """Issue 20: a job still running when the grace ends is handed back; the next attempt
    restores the conversation and the work tree of its last saved step (the fix made in
    step 1) and asks the model only for the step that was cut short and those after."""
    async with stack(tmp_path, resumable_script(30), per_conversation=True, sandbox="local",
                     shutdown_grace=1) as s:
        s.sim.add_repo(REPO, fixable())
        number = s.label_new_issue(REPO, "Fix add", "add is wrong")
        await in_step(s, 1)  # step 1 (the fix) is saved; step 2 runs `sleep 30`
        s.worker.slots = 0
        started = time.monotonic()
        await s.worker.drain()
        assert time.monotonic() - started < 1 + s.worker.settings.stop_seconds
        [job] = await s.store.list_jobs()
        assert job.state == "queued" and job.stage == "agent" and job.attempts == 0
        assert job.result.agent.checkpoint is not None and job.result.agent.checkpoint.step == 1
        await asyncio.sleep(1)  # rounds of the worker (it announces queued jobs) keep it so
        assert "will resume" in status_comment(s, number).body
        s.model.script[1] = {"tool": "bash", "args": {"command": "true"}}  # quicker this time
        s.worker.slots = 2
        s.worker.wake.set()
        job = await s.wait_job(lambda j: True, timeout=120)
        assert job.state == "succeeded", job.reason
        # Step 0 (the fix) was asked once; step 1, cut short, again; then steps 2 and 3.
        assert s.model.steps_asked() == [0, 1, 1, 2, 3]
        repo = s.sim.get_repo(REPO)
        assert "return a + b" in simgit("show", f"{job.result.delivery.branch}:calc.py",
                                        cwd=repo.path)
        assert job.result.agent.spend.steps == 4 and not job.result.agent.checkpoint
        kinds = [json.loads(line)["kind"] for line in
                 Path(job.result.agent.transcript).read_text().splitlines()]
        assert kinds.count("spec") == 1 and kinds.count("resumed") == 1


def free_ports(count: int = 3) -> int:
    """The first of ``count`` consecutive ports nothing listens on (bench/faults.py's
    processes take a port each from there)."""
    import socket

    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        try:
            for offset in range(1, count):
                with socket.socket() as other:
                    other.bind(("127.0.0.1", first + offset))
        except OSError:
            continue
        return first
    raise AssertionError("no free ports")


@pytest.mark.parametrize("case", ["sigterm-grace", "sigterm", "disk-full-worker"])
async def test_stops_and_full_disks_on_real_processes(case: str, tmp_path: Path) -> None:
    """Issue 20, as bench/faults.py runs it (real `handoff serve`, workers, simulator and
    scripted model as processes; the local sandbox backend): SIGTERM inside the grace ends
    the job with its PR before the worker exits; past it, the job is handed back and goes
    on from its saved step on the next worker; a full data disk never kills serve's worker
    and the job ends once there is space again."""
    from bench import faults

    run = {"sigterm-grace": faults.sigterm_inside_grace, "sigterm": faults.sigterm_past_grace,
           "disk-full-worker": faults.disk_full_worker}[case]
    try:
        result = await run(tmp_path, free_ports(), sandbox="local")
    except faults.NotRunHere as exc:
        pytest.skip(str(exc))
    assert result.ok, result.observed
