"""Who steers Handoff, and what runs with network (security audit 3, rows 33-37 and 39).

Each test runs one attack of ``bench/security_steering.py`` (the list ``bench/security.py``
prints): every one worked on the code the audit examined (commit a44717a) and must be
blocked now. They go through signed webhooks into the real receiver, from the GitHub simulator
where the attack is end to end; the setup attacks run a whole label -> PR -> /retry loop in
Podman with an allowed host listening on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import security_steering as steering
from bench.security import Lab
from security.test_attacks import check


@pytest.fixture
def lab() -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="handoff-steer-"))
    # Ports 18740-18749 on 127.0.0.1 for the allowed "registry".
    yield Lab("podman", root, port_base=18740)
    shutil.rmtree(root, ignore_errors=True)


async def test_an_outsider_commenting_again_and_again_gets_at_most_one_reply(lab: Lab) -> None:
    evidence = await check(lab, steering.outsider_comment_spam)
    assert "-> 1 replies to @mallory" in evidence  # her first /cancel: refused, once


async def test_a_reader_closing_a_writer_s_issue_does_not_stop_its_job(lab: Lab) -> None:
    evidence = await check(lab, steering.reader_closes_writers_issue)
    assert "does not stop" in evidence


async def test_an_edit_flood_keeps_the_latest_edit_not_every_edit(lab: Lab) -> None:
    await check(lab, steering.edit_flood)


async def test_a_replayed_delivery_starts_no_job_but_github_s_redelivery_is_answered(
        lab: Lab) -> None:
    evidence = await check(lab, steering.replayed_delivery)
    assert "replay 200" in evidence and "aged 200" in evidence


async def test_metrics_are_not_served_on_the_webhook_port(lab: Lab) -> None:
    await check(lab, steering.metrics_on_webhook_port)


@pytest.mark.podman
async def test_a_preinstall_the_branch_adds_never_runs_with_network(lab: Lab) -> None:
    evidence = await check(lab, steering.setup_runs_a_preinstall_the_branch_added)
    assert "`package.json`" in evidence and "--ignore-scripts" in evidence


@pytest.mark.podman
async def test_the_default_preinstall_never_runs_the_branch_s_code(lab: Lab) -> None:
    await check(lab, steering.setup_runs_the_default_preinstall_s_changed_file)


async def test_a_writer_closing_the_issue_still_stops_its_job(lab: Lab) -> None:
    """The other side of the closing check: a writer who closes the issue stops the job."""
    slow = [steering.bash("sleep 20"), steering.finish("slept")]
    async with steering.stack(lab.root / "writer-close", slow, sandbox="local") as s:
        s.sim.add_repo(steering.REPO, steering.CALC)
        s.sim.get_repo(steering.REPO).collaborators.update({"maya": "write"})
        number = s.label_new_issue(steering.REPO, "Slow", "x", by="maya")
        await steering.wait_stage(s, "agent")
        s.sim.close_issue(steering.REPO, number, "maya")
        job = await s.wait_job(lambda j: j.issue_number == number, timeout=30)
    assert job.state == "cancelled" and job.reason == "the issue was closed by @maya"
