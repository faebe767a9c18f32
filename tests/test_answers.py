"""Nobody is left wondering: a second trigger on an issue with a job under way is answered,
a /cancel gets a reaction, and a waiting job's place in the queue stays current."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from agent_fixtures import BUGGY_REPO

from devkit.stack import Stack, stack

REPO = "acme/calc"
pytestmark = pytest.mark.podman


def comments(s: Stack, number: int) -> list[str]:
    return [c.body for c in s.sim.get_repo(REPO).issues[number].comments]


async def until(s: Stack, check: object, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.2)):
        await s.sim.settle()
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError("not reached")


async def test_second_triggers_cancels_and_queue_places_are_answered(tmp_path: Path) -> None:
    slow = [{"tool": "bash", "args": {"command": "sleep 30"}},
            {"tool": "finish", "args": {"summary": "slept"}}]
    async with stack(tmp_path, slow, concurrency=1) as s:
        s.sim.add_repo(REPO, BUGGY_REPO)
        busy = s.label_new_issue(REPO, "Busy", "x")
        await until(s, lambda: any("Agent working" in c for c in comments(s, busy)))
        second, third = (s.label_new_issue(REPO, t, "x") for t in ("Second", "Third"))
        await until(s, lambda: any("Position 2" in c for c in comments(s, third)))

        # A second /agent on the busy issue: a reaction and a line that names the job.
        s.sim.comment(REPO, busy, "/agent", "acme")
        await until(s, lambda: any("already has this" in c for c in comments(s, busy)))
        again = next(c for c in s.sim.get_repo(REPO).issues[busy].comments
                     if c.body == "/agent")
        assert again.reactions and not any(j.issue_number == busy and j.state == "queued"
                                           for j in await s.store.list_jobs(10))

        # The second issue leaves the queue: the third's status moves up.
        s.sim.unlabel_issue(REPO, second, "agent", "acme")
        await until(s, lambda: any("Position 1" in c for c in comments(s, third)))

        # A writer's /cancel gets a reaction, and the job stops.
        s.sim.comment(REPO, busy, "/cancel", "acme")
        job = await s.wait_job(lambda j: j.issue_number == busy)
        assert job.state == "cancelled"
        cancel = next(c for c in s.sim.get_repo(REPO).issues[busy].comments
                      if c.body == "/cancel")
        assert cancel.reactions
        replies = [c for c in comments(s, busy) if "already has this" in c]
        assert len(replies) == 1  # answered once
