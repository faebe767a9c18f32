"""The worker's parts on their own, over a real SQLite store: the heartbeat, the chores."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from helpers import queue

from bot.github.client import GitHubApiError
from bot.jobs.chores import Chores
from bot.jobs.heartbeat import Heartbeat, Stop
from bot.jobs.states import State
from bot.jobs.store import Job, Store


async def forever() -> None:
    await asyncio.sleep(3600)


async def test_heartbeat_renews_then_stops_a_run_whose_lease_was_taken(store: Store) -> None:
    await queue(store)
    job = await store.claim("w1", 1.0)
    assert job
    beat = Heartbeat(store, "w1", lease_seconds=1.0, every=0.05)
    run = asyncio.create_task(forever())
    keeping = asyncio.create_task(beat.keep(job, run))
    await asyncio.sleep(0.3)
    renewed = await store.get_job(job.id)
    assert renewed and (renewed.lease_expires_at or 0) > (job.lease_expires_at or 0)
    # Another claim's token: this worker's lease is gone, so its run must stop.
    await store.update_job(job.id, lease_token="someone-else")
    assert await asyncio.wait_for(keeping, 5) == Stop.LOST
    assert run.cancelled() and beat.stopping[job.id] == Stop.LOST


async def test_heartbeat_stops_a_run_asked_to_cancel(store: Store) -> None:
    await queue(store)
    job = await store.claim("w1", 60)
    assert job
    beat = Heartbeat(store, "w1", lease_seconds=60, every=0.05)
    run = asyncio.create_task(forever())
    await store.write(lambda conn: store.cancel_jobs(conn, "o/r", 1, "/cancel", False))
    assert await asyncio.wait_for(beat.keep(job, run), 5) == Stop.CANCEL
    assert run.cancelled()


class Conversation:
    """Answers who may ask as told; records what it was asked to say."""

    def __init__(self, why: str = "", fail: Exception | None = None) -> None:
        self.why, self.fail = why, fail
        self.announced: list[tuple[int, int]] = []
        self.acknowledged: list[int] = []

    async def not_permitted(self, job: Job) -> str:
        if self.fail:
            raise self.fail
        return self.why

    async def announce(self, job: Job, position: int) -> int | None:
        self.announced.append((job.id, position))
        return 99

    async def acknowledge_early(self, job: Job) -> bool:
        self.acknowledged.append(job.id)
        return True

    async def answer(self, request: dict[str, Any], job: Job, speak: bool) -> None: ...

    async def may_steer(self, job: Job, login: str) -> bool:
        return login == "alice"

    async def refuse_cancel(self, job: Job) -> None: ...

    async def handed_back(self, job: Job) -> None: ...


async def test_arrivals_refused_end_failed_and_the_others_are_checked(store: Store) -> None:
    job_id = await queue(store)
    await Chores(store, Conversation(why="@alice has no write access")).review_arrivals()
    job = await store.get_job(job_id)
    assert job and job.state == State.FAILED and job.category == "not-permitted"
    assert job.reason == "@alice has no write access"

    other = await queue(store, issue=2)
    talk = Conversation()
    await Chores(store, talk).review_arrivals()
    job = await store.get_job(other)
    assert job and job.state == State.QUEUED and job.result.requester_checked
    assert talk.acknowledged == [other] and job.result.acknowledged  # 👀 before it runs


async def test_an_arrival_checked_under_a_long_rate_limit_waits_for_it(store: Store) -> None:
    job_id = await queue(store)
    until = time.time() + 600
    limited = GitHubApiError("rate limited", status=403, retry_at=until)
    await Chores(store, Conversation(fail=limited)).review_arrivals()
    job = await store.get_job(job_id)
    assert job and job.state == State.QUEUED and job.stage == "rate-limited"
    assert job.not_before == until and job.deferrals == 1


async def test_queue_positions_are_announced_once_each(store: Store) -> None:
    first, second = await queue(store), await queue(store, issue=2)
    talk = Conversation()
    chores = Chores(store, talk)
    await chores.announce_queued()
    await chores.announce_queued()  # nothing moved: nothing said again
    assert talk.announced == [(first, 1), (second, 2)]
    job = await store.get_job(second)
    assert job and job.result.status_comment_id == 99


class SlowFirstComment(Conversation):
    """Posts a new status comment when the job has none (as the reporter does); one job's
    slowly, so another worker's round runs while it is in flight."""

    def __init__(self, gate: asyncio.Event | None = None, slow_job: int = 0) -> None:
        super().__init__()
        self.gate, self.slow_job, self.posted = gate, slow_job, 0

    async def announce(self, job: Job, position: int) -> int | None:
        self.announced.append((job.id, position))
        if job.result.status_comment_id is not None:
            return job.result.status_comment_id  # edited in place
        if self.gate is not None and job.id == self.slow_job:
            await self.gate.wait()
        self.posted += 1
        return 100 + self.posted


async def test_two_workers_never_post_two_status_comments_for_one_queued_job(
        store: Store) -> None:
    ahead, waiting = await queue(store), await queue(store, issue=2)
    assert ahead < waiting
    gate = asyncio.Event()
    slow, fast = SlowFirstComment(gate, slow_job=waiting), SlowFirstComment()
    first = asyncio.create_task(Chores(store, slow).announce_queued())
    await asyncio.sleep(0.2)  # worker 1 is posting the waiting job's first comment
    started = await store.claim("w3", 60)  # the job ahead starts: the waiting one moves up
    assert started and started.id == ahead
    await Chores(store, fast).announce_queued()
    gate.set()
    await asyncio.wait_for(first, 5)
    await Chores(store, fast).announce_queued()
    job = await store.get_job(waiting)
    assert job and job.result.status_comment_id is not None
    # One comment per job: whoever posted it, later positions edit it in place.
    assert slow.posted + fast.posted == 2, (slow.announced, fast.announced)
    assert (waiting, 1) in slow.announced + fast.announced


async def test_a_job_parked_until_later_takes_no_place_in_the_line(store: Store) -> None:
    parked, waiting = await queue(store), await queue(store, issue=2)
    await store.update_queued(parked, not_before=time.time() + 600, stage="waiting-for-checks")
    talk = Conversation()
    await Chores(store, talk).announce_queued()
    assert talk.announced == [(waiting, 1)]
