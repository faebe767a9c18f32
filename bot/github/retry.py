"""Retry policies for the edges (GitHub, the model API): bounded in tries and in time."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, backoff, and the longest single wait worth sitting through."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_wait: float = 120.0  # a server asking for longer than this ends the call with an error


class WaitTooLong(Exception):
    """The server asked us to wait longer than the policy allows."""

    def __init__(self, seconds: float, cause: BaseException) -> None:
        super().__init__(f"asked to wait {seconds:.0f}s, more than allowed")
        self.seconds, self.cause = seconds, cause


def retry_after_seconds(headers: object) -> float | None:
    """Seconds the server asks for: ``retry-after`` first, then ``x-ratelimit-reset``."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    value = get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    if get("x-ratelimit-remaining") == "0" and get("x-ratelimit-reset"):
        try:
            return max(0.0, float(get("x-ratelimit-reset")) - time.time() + 1)
        except ValueError:
            return None
    return None


async def call_with_retries(
    fn: Callable[[], Awaitable[T]], policy: RetryPolicy,
    retryable: Callable[[BaseException], bool],
    asked_wait: Callable[[BaseException], float | None],
) -> T:
    """Call ``fn`` until it succeeds, it fails for good, or the policy's bound is reached."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = min(policy.max_delay, policy.base_delay * 2 ** (state.attempt_number - 1))
        asked = asked_wait(exc) if exc else None
        if asked is not None and asked > policy.max_wait and exc is not None:
            raise WaitTooLong(asked, exc)
        return float(max(asked or 0.0, backoff))

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts), wait=wait,
        retry=retry_if_exception(retryable), reraise=True,
    )
    return await retrying(fn)
