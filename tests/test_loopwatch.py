"""A blocked event loop is reported with where it is stuck, and the lag is measured."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot import metrics
from bot.loopwatch import watching


def block_the_loop_for_a_while() -> None:
    time.sleep(0.4)


async def test_a_blocked_loop_is_logged_with_the_blocking_call(
        caplog: pytest.LogCaptureFixture) -> None:
    before = metrics.LOOP_LAG._sum.get()  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="handoff.loop"):
        async with watching(0.1):
            await asyncio.sleep(0.1)
            block_the_loop_for_a_while()
            await asyncio.sleep(0.1)
    blocked = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    assert len(blocked) == 1 and "block_the_loop_for_a_while" in blocked[0]
    assert any("ran again after" in r.getMessage() for r in caplog.records)
    assert metrics.LOOP_LAG._sum.get() - before >= 0.3  # type: ignore[attr-defined]


async def test_a_loop_that_keeps_running_is_not_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="handoff.loop"):
        async with watching(0.2):
            for _ in range(10):
                await asyncio.sleep(0.02)
    assert not caplog.records
