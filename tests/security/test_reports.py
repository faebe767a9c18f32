"""What Handoff posts and prints about a failed job (audit 3, L6 and L7): an internal error's
text (host paths) stays off GitHub; agent-made control characters reach no terminal."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from sim import app_client, simulator
from test_cli import handoff

from bench.security import ESCAPES
from bot.config import Settings
from bot.jobs.states import Failure
from bot.jobs.store import Job, Store
from bot.jobs.worker import JobFailed, JobResult, Worker
from bot.logs import TextFormatter
from bot.reporter import wording
from bot.reporter.report import GitHubReporter

REPO = "acme/calc"


class Crashing:
    """A job that crashes inside Handoff as the baseline copy did (audit row 40): the
    exception's text names a path in the worker's data directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def run(self, job: Job) -> JobResult:
        raise shutil.Error([(self.path, f"{self.path}-copy", "[Errno 28] No space left")])


class SaysNothingChanged:
    """The agent's summary, which ends up in the job's reason, carries terminal escapes."""

    async def run(self, job: Job) -> JobResult:
        raise JobFailed(Failure.NO_CHANGES, wording.NO_CHANGES.format(
            summary=f"Nothing to do.{ESCAPES}"))


async def failed_job(store: Store, tmp_path: Path, runner: object) -> tuple[Job, list[str]]:
    """A labeled issue's job run by a real worker and reported on the simulated GitHub."""
    async with simulator(tmp_path / "gh") as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        number = sim.open_issue(REPO, "Fix", "x", "acme").number
        job_id = await store.write(lambda conn: store.insert_job(
            conn, kind="implement", repo=REPO, issue_number=number, requested_by="acme",
            installation_id=sim.get_repo(REPO).installation_id))
        worker = Worker(store, runner, GitHubReporter(app_client(sim)))  # type: ignore[arg-type]
        await worker.run_once()
        job = await store.get_job(job_id or 0)
        assert job is not None and job.reported
        return job, [c.body for c in sim.get_repo(REPO).issues[number].comments]


async def test_an_internal_error_is_posted_as_a_generic_cause_with_the_job_id(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host_path = str(tmp_path / "data/workspaces/2/pad/f00372")
    job, comments = await failed_job(store, tmp_path, Crashing(host_path))
    [comment] = comments
    assert job.category == "internal"
    assert host_path not in comment and "workspaces" not in comment
    assert f"internal error in Handoff (job {job.id})" in comment
    assert host_path in job.reason  # the dashboard and `handoff jobs` keep the details
    assert host_path in caplog.text


async def test_terminal_escapes_in_a_reason_reach_no_terminal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    store = await Store.open(settings.db_url)
    try:
        with caplog.at_level(logging.INFO):
            job, _ = await failed_job(store, tmp_path, SaysNothingChanged())
    finally:
        await store.close()
    assert ESCAPES in job.reason  # as the agent wrote it, for the dashboard's JSON
    listed = handoff(tmp_path, "jobs")
    assert "no-changes" in listed.stdout
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "\\x1b]0;OWNED-TITLE\\x07" in listed.stdout
    lines = [TextFormatter("%(message)s").format(r) for r in caplog.records]
    ended = [line for line in lines if "ended failed" in line]
    assert ended and not any("\x1b" in line or "\x9b" in line for line in ended)
