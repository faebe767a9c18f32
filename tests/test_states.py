"""The job-state transition table, and the store's state changes checked against it on a real
SQLite store: each one the table allows, each one it refuses leaves the row as it was."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.jobs import states
from bot.jobs.states import (
    ACTIVE_STATES,
    FINAL,
    FINAL_STATES,
    INITIAL,
    TRANSITIONS,
    Event,
    IllegalTransition,
    State,
    move,
    next_state,
)
from bot.jobs.store import Job, Store
from bot.jobs.store import cancels as cancels_module
from bot.jobs.store import jobs as jobs_module
from bot.jobs.store import leases as leases_module

STORE_DIR = Path(__file__).resolve().parent.parent / "bot" / "jobs" / "store"


# The table ------------------------------------------------------------------------------------

def test_final_states_have_no_way_out() -> None:
    assert {s for (s, _e) in TRANSITIONS} & FINAL == set()
    assert set(FINAL_STATES) == {"succeeded", "failed", "cancelled"}
    assert set(ACTIVE_STATES) == {"queued", "running"}
    assert INITIAL == State.QUEUED


def test_every_event_leads_to_one_state_and_every_state_is_reached() -> None:
    for event in Event:
        step = move(event)
        assert step.sources, f"{event} is never allowed"
        assert all(TRANSITIONS[(s, event)] == step.target for s in step.sources)
    reached = {INITIAL, *TRANSITIONS.values()}
    assert reached == set(State)


@pytest.mark.parametrize(("current", "event"), [
    (State.SUCCEEDED, Event.CLAIM), (State.FAILED, Event.HAND_BACK),
    (State.CANCELLED, Event.CANCEL), (State.QUEUED, Event.SUCCEED),
    (State.QUEUED, Event.DEFER), (State.RUNNING, Event.REFUSE), (State.QUEUED, Event.TAKE_OVER),
    ("gone", Event.CLAIM),
])
def test_illegal_transitions_are_refused(current: str, event: Event) -> None:
    with pytest.raises(IllegalTransition, match=f"cannot {event.value} from {current}"):
        next_state(current, event)


def test_a_restricted_move_must_be_in_the_table() -> None:
    assert move(Event.CANCEL, only=(State.QUEUED,)).sources == (State.QUEUED,)
    with pytest.raises(IllegalTransition):
        move(Event.CANCEL, only=(State.SUCCEEDED,))


def test_ending_names_the_event_of_each_final_state() -> None:
    assert [states.ending(s) for s in (State.SUCCEEDED, State.FAILED, State.CANCELLED)] == \
        [Event.SUCCEED, Event.FAIL, Event.CANCEL]
    with pytest.raises(ValueError, match="not a state a job ends in"):
        states.ending(State.QUEUED)


def test_every_job_state_the_store_writes_is_a_target_of_the_table() -> None:
    """Read as a reviewer would: in the store's modules that write the jobs table, the only
    ``state=`` is a transition's target."""
    writes = []
    for path in sorted(STORE_DIR.glob("*.py")):
        text = path.read_text()
        if not re.search(r"from bot\.jobs\.schema import [^\n]*\bjobs\b", text):
            continue
        writes += [(path.name, m.group(0)) for m in re.finditer(r"\bstate=[^,)\n]*", text)]
    assert writes, "no state writes found: the scan is broken"
    stray = [(name, w) for name, w in writes if not re.fullmatch(r"state=\w+\.target\.value", w)]
    assert stray == []


# The store against the table ------------------------------------------------------------------

class Seen:
    """The events the store looked up in the table."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[Event] = []
        for module in (jobs_module, leases_module, cancels_module):
            monkeypatch.setattr(module, "move", self.move)

    def move(self, event: Event, only: tuple[State, ...] | None = None) -> states.Move:
        self.events.append(event)
        return states.move(event, only)


async def rows(store: Store) -> dict[int, dict[str, Any]]:
    return {j.id: vars(j).copy() for j in await store.list_jobs(100)}


async def new_job(store: Store, issue: int) -> int:
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo="o/r", issue_number=issue, requested_by="maya"))
    assert job_id is not None
    return job_id


async def changes(store: Store, seen: Seen, act: Callable[[], Awaitable[object]]
                  ) -> tuple[object, list[tuple[int, State, State]], list[Event]]:
    """Run ``act``; returns its result, each job whose state changed, and the events the
    store looked up. Every change must be one the table allows for one of those events."""
    before = await rows(store)
    seen.events.clear()
    result = await act()
    after = await rows(store)
    moved = [(i, before[i]["state"], after[i]["state"]) for i in before
             if before[i]["state"] != after[i]["state"]]
    for _i, old, new in moved:
        assert any(TRANSITIONS.get((old, e)) == new for e in seen.events), (old, new, seen.events)
    return result, moved, list(seen.events)


async def test_each_store_transition_goes_through_the_table(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Seen(monkeypatch)
    first, second, third, fourth = [await new_job(store, n) for n in (1, 2, 3, 4)]
    assert {r["state"] for r in (await rows(store)).values()} == {INITIAL}

    claimed, moved, events = await changes(store, seen, lambda: store.claim("w1", 60))
    assert isinstance(claimed, Job) and claimed.id == first
    assert moved == [(first, State.QUEUED, State.RUNNING)] and Event.CLAIM in events

    # Its worker died: the lease ran out and another worker takes it over.
    await store.update_job(first, lease_expires_at=time.time() - 1)
    taken, moved, events = await changes(store, seen, lambda: store.claim("w2", 60))
    assert isinstance(taken, Job) and taken.id == first and taken.lease_owner == "w2"
    assert moved == [] and Event.TAKE_OVER in events  # running -> running

    ok, moved, events = await changes(store, seen, lambda: store.defer(
        first, "w2", time.time() - 1, "rate limited", taken.result, taken.lease_token))
    assert ok and moved == [(first, State.RUNNING, State.QUEUED)] and events == [Event.DEFER]

    again = await store.claim("w2", 60)
    assert again and again.id == first
    ok, moved, events = await changes(store, seen, lambda: store.release(
        first, "w2", again.lease_token))
    assert ok and moved == [(first, State.RUNNING, State.QUEUED)]
    assert events == [Event.HAND_BACK]

    for state, job_id in ((State.SUCCEEDED, first), (State.FAILED, second),
                          (State.CANCELLED, third)):
        held = await store.claim("w3", 60)
        assert held and held.id == job_id
        ok, moved, events = await changes(store, seen, lambda: store.finish(
            job_id, "w3", state, token=held.lease_token))  # noqa: B023 (awaited at once)
        assert ok and moved == [(job_id, State.RUNNING, state)]
        assert events == [states.ending(state)]

    ok, moved, events = await changes(store, seen, lambda: store.refuse(fourth, "no access"))
    assert ok and moved == [(fourth, State.QUEUED, State.FAILED)] and events == [Event.REFUSE]
    refused = await store.get_job(fourth)
    assert refused and refused.category == "not-permitted" and refused.finished_at


async def test_cancels_go_through_the_table(store: Store,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Seen(monkeypatch)
    queued = await new_job(store, 1)
    touched, moved, events = await changes(store, seen, lambda: store.write(
        lambda conn: store.cancel_jobs(conn, "o/r", 1, "closed", only_queued=False)))
    assert touched == [queued] and moved == [(queued, State.QUEUED, State.CANCELLED)]
    assert events == [Event.CANCEL]

    other = await new_job(store, 2)
    await store.write(lambda conn: store.request_cancel(conn, "o/r", 2, "maya"))
    job = await store.get_job(other)
    assert job
    _, moved, events = await changes(store, seen, lambda: store.settle_cancel(job, True))
    assert moved == [(other, State.QUEUED, State.CANCELLED)] and events == [Event.CANCEL]

    running = await new_job(store, 3)
    held = await store.claim("w", 60)
    assert held and held.id == running
    touched, moved, _ = await changes(store, seen, lambda: store.write(
        lambda conn: store.cancel_jobs(conn, "o/r", 3, "/cancel", only_queued=False)))
    assert touched == [running] and moved == []  # asked to stop; its worker ends it
    job = await store.get_job(running)
    assert job and job.cancel_requested and job.state == State.RUNNING


async def test_transitions_the_table_refuses_leave_the_row_unchanged(store: Store) -> None:
    queued = await new_job(store, 1)
    running = await new_job(store, 2)
    held = await store.claim("w", 60)
    assert held and held.id == queued  # the oldest
    held2 = await store.claim("w", 60)
    assert held2 and held2.id == running
    ended = await store.finish(queued, "w", State.SUCCEEDED, token=held.lease_token)
    assert ended
    before = await rows(store)

    # An ended job cannot end again, be handed back, deferred or refused.
    assert not await store.finish(queued, "w", State.FAILED, token=held.lease_token)
    assert not await store.release(queued, "w", held.lease_token)
    assert not await store.defer(queued, "w", time.time(), "x", held.result, held.lease_token)
    assert not await store.refuse(queued, "x")
    # A running job is not refused (its worker ends it), nor claimed again while held.
    assert not await store.refuse(running, "x")
    assert await store.claim("other", 60) is None
    # No write sets a state outside the table, nor ends a job in a state that is not final.
    with pytest.raises(ValueError, match="transition"):
        await store.update_job(running, state="succeeded")
    with pytest.raises(ValueError, match="transition"):
        await store.update_held(running, held2.lease_token, state="queued")
    with pytest.raises(ValueError, match="transition"):
        await store.update_queued(running, state="failed")
    with pytest.raises(ValueError, match="not a state a job ends in"):
        await store.finish(running, "w", State.QUEUED, token=held2.lease_token)
    after = await rows(store)
    assert after == before
