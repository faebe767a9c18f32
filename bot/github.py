"""Handoff's GitHub layer: App auth, repo-scoped installation tokens, paced writes, retries."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from githubkit import AppAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed, RequestTimeout

from bot import metrics
from bot.logs import redact_data
from bot.retry import RetryPolicy, WaitTooLong, call_with_retries, retry_after_seconds
from bot.tls import client_context

log = logging.getLogger("handoff.github")

JOB_PERMISSIONS = {"contents": "write", "pull_requests": "write", "issues": "write",
                   "checks": "write", "metadata": "read"}
WRITE_ROLES = {"admin", "maintain", "write"}


class GitHubApiError(Exception):
    """A GitHub call failed for good; the message says what GitHub answered."""

    def __init__(self, message: str, status: int | None = None,
                 retry_at: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_at = retry_at  # set when GitHub asked for a long wait (rate limits)


def _answer(exc: BaseException) -> str:
    if isinstance(exc, RequestFailed):
        resp = exc.response
        try:
            message = resp.json().get("message", "")
        except ValueError:
            message = resp.text[:200]
        return f"{resp.status_code} {message}".strip()
    return f"{type(exc).__name__}: {exc}"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RateLimitExceeded):
        return True
    if isinstance(exc, RequestFailed):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    if isinstance(exc, RequestTimeout):
        return True
    if isinstance(exc, RequestError):
        # Only the network: a private key that does not parse (githubkit wraps the JWT
        # error too) fails the same way every time, and is not GitHub being down.
        return isinstance(exc.__cause__, httpx.TransportError | OSError)
    return isinstance(exc, httpx.TransportError)


def key_problem(exc: BaseException) -> str | None:
    """What is wrong with the App's key when that is why a call failed, else None."""
    cause = exc.__cause__ if isinstance(exc, RequestError) else None
    if cause is not None and not isinstance(cause, httpx.TransportError | OSError):
        return f"the App's private key cannot sign a JWT: {cause}"
    return None


async def _counted(fn: Callable[[], Awaitable[Any]]) -> Any:
    """One try of a GitHub call, counted for ``GET /metrics`` with its rate-limit headers."""
    try:
        resp = await fn()
    except RequestFailed as exc:
        metrics.github_answer(exc.response.raw_request.method, exc.response)
        raise
    except Exception:
        metrics.github_answer("-", None)
        raise
    metrics.github_answer(resp.raw_request.method, resp)
    return resp


def _asked_wait(exc: BaseException) -> float | None:
    if isinstance(exc, RateLimitExceeded):
        return exc.retry_after.total_seconds()
    if isinstance(exc, RequestFailed):
        return retry_after_seconds(exc.response.headers)
    return None


class Pacer:
    """Spaces one installation's writes (about a second apart, under 80 a minute)."""

    def __init__(self, interval: float = 1.0, per_minute: int = 80) -> None:
        self.interval, self.per_minute = interval, per_minute
        self.locks: dict[int, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.last: dict[int, float] = {}
        self.recent: dict[int, collections.deque[float]] = collections.defaultdict(
            collections.deque)

    async def wait(self, installation_id: int) -> None:
        async with self.locks[installation_id]:
            now = time.monotonic()
            delay = self.last.get(installation_id, 0.0) + self.interval - now
            window = self.recent[installation_id]
            while window and window[0] < now - 60:
                window.popleft()
            if len(window) >= self.per_minute:
                delay = max(delay, window[0] + 60 - now)
            if delay > 0:
                await asyncio.sleep(delay)
            self.last[installation_id] = time.monotonic()
            window.append(self.last[installation_id])


@dataclass
class _Token:
    value: str
    expires_at: float


class GitHubApp:
    """The App: mints JWTs (through githubkit) and caches repo-scoped installation tokens."""

    def __init__(self, app_id: str, private_key: str, base_url: str = "https://api.github.com",
                 *, timeout: float = 30.0, policy: RetryPolicy | None = None,
                 pacer: Pacer | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=10.0)
        self.policy = policy or RetryPolicy()
        self.pacer = pacer or Pacer()
        # A cache of its own: githubkit's shared default keys JWTs by app id alone.
        self.app = GitHub(AppAuthStrategy(app_id, private_key), cache_strategy=MemCacheStrategy(),
                          **self._options())
        self.tokens: dict[tuple[int, str], _Token] = {}

    def _options(self) -> dict[str, Any]:
        # Retries are ours (bounded, see bot.retry); githubkit's sleep inline without a bound.
        return {"base_url": self.base_url, "timeout": self.timeout, "auto_retry": False,
                "http_cache": False, "user_agent": "Handoff", "ssl_verify": client_context()}

    async def call(self, fn: Callable[[], Awaitable[Any]], what: str) -> Any:
        """One GitHub call under the retry policy; failures become ``GitHubApiError``."""
        async def counted() -> Any:
            return await _counted(fn)

        try:
            return await call_with_retries(counted, self.policy, _retryable, _asked_wait)
        except WaitTooLong as exc:
            raise GitHubApiError(
                f"{what}: GitHub answered {_answer(exc.cause)} and asked to wait "
                f"{exc.seconds:.0f}s",
                getattr(getattr(exc.cause, "response", None), "status_code", None),
                retry_at=time.time() + exc.seconds) from exc
        except (RequestFailed, RequestError, httpx.TransportError) as exc:
            status = exc.response.status_code if isinstance(exc, RequestFailed) else None
            if problem := key_problem(exc):
                raise GitHubApiError(f"{what}: {problem}", status) from exc
            raise GitHubApiError(f"{what}: GitHub answered {_answer(exc)}", status) from exc

    async def installation_token(self, installation_id: int, repo_name: str,
                                 fresh: bool = False) -> str:
        """A token for one repository, cached until five minutes before it expires."""
        key = (installation_id, repo_name)
        cached = self.tokens.get(key)
        if cached and not fresh and cached.expires_at - 300 > time.time():
            return cached.value

        async def mint() -> Any:
            return await self.app.arequest(
                "POST", f"/app/installations/{installation_id}/access_tokens",
                json={"repositories": [repo_name], "permissions": JOB_PERMISSIONS})

        resp = await self.call(mint, "creating an installation token")
        data = resp.json()
        expires = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00")).timestamp()
        self.tokens[key] = _Token(data["token"], expires)
        return str(data["token"])

    def repo(self, installation_id: int, full_name: str) -> RepoClient:
        return RepoClient(self, installation_id, full_name)

    async def app_request(self, method: str, url: str, **kwargs: Any) -> Any:
        """A call authenticated as the App itself (JWT)."""
        async def send() -> Any:
            return await self.app.arequest(method, url, **kwargs)
        return (await self.call(send, f"{method} {url}")).json()


class RepoClient:
    """Calls about one repository, with its own installation token."""

    def __init__(self, app: GitHubApp, installation_id: int, full_name: str) -> None:
        self.app, self.installation_id, self.full_name = app, installation_id, full_name
        self.owner, self.name = full_name.split("/", 1)

    async def token(self, fresh: bool = False) -> str:
        return await self.app.installation_token(self.installation_id, self.name, fresh)

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None) -> Any:
        """A REST call on this repository; writes are paced, a 401 re-mints the token once."""
        url = f"/repos/{self.full_name}{path}"
        refreshed = False
        if json is not None:  # every text Handoff writes to GitHub passes here
            json = redact_data(json)

        async def send() -> Any:
            nonlocal refreshed
            if method != "GET":
                await self.app.pacer.wait(self.installation_id)
            try:
                return await self._send(method, url, json, params, await self.token())
            except RequestFailed as exc:
                if exc.response.status_code != 401 or refreshed:
                    raise
                refreshed = True
                log.info("token for %s rejected; minting a new one", self.full_name)
                return await self._send(method, url, json, params, await self.token(fresh=True))

        resp = await self.app.call(send, f"{method} {url}")
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    async def _send(self, method: str, url: str, json: Any, params: dict[str, Any] | None,
                    token: str) -> Any:
        gh = GitHub(TokenAuthStrategy(token), **self.app._options())
        return await gh.arequest(method, url, json=json, params=params)

    # -- the calls Handoff makes -------------------------------------------------------------

    async def get_repo(self) -> dict[str, Any]:
        return dict(await self.request("GET", ""))

    async def get_issue(self, number: int) -> dict[str, Any]:
        return dict(await self.request("GET", f"/issues/{number}"))

    async def list_comments(self, number: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            chunk = await self.request("GET", f"/issues/{number}/comments",
                                       params={"per_page": 100, "page": page})
            out += chunk
            if len(chunk) < 100:
                return out
            page += 1

    async def create_comment(self, number: int, body: str) -> dict[str, Any]:
        return dict(await self.request("POST", f"/issues/{number}/comments", json={"body": body}))

    async def update_comment(self, comment_id: int, body: str) -> dict[str, Any]:
        return dict(await self.request("PATCH", f"/issues/comments/{comment_id}",
                                       json={"body": body}))

    async def react_issue(self, number: int, content: str = "eyes") -> None:
        await self.request("POST", f"/issues/{number}/reactions", json={"content": content})

    async def react_comment(self, comment_id: int, content: str = "eyes") -> None:
        await self.request("POST", f"/issues/comments/{comment_id}/reactions",
                           json={"content": content})

    async def permission(self, login: str) -> str:
        """The user's role on the repository (admin, maintain, write, triage, read or none)."""
        try:
            data = await self.request("GET", f"/collaborators/{login}/permission")
        except GitHubApiError as exc:
            if exc.status == 404:
                return "none"
            raise
        return str(data.get("role_name") or data.get("permission") or "none")

    async def find_pull(self, branch: str) -> dict[str, Any] | None:
        pulls = await self.request("GET", "/pulls", params={
            "head": f"{self.owner}:{branch}", "state": "open"})
        return dict(pulls[0]) if pulls else None

    async def create_pull(self, **fields: Any) -> dict[str, Any]:
        return dict(await self.request("POST", "/pulls", json=fields))

    async def update_pull(self, number: int, **fields: Any) -> dict[str, Any]:
        return dict(await self.request("PATCH", f"/pulls/{number}", json=fields))

    async def get_pull(self, number: int) -> dict[str, Any]:
        return dict(await self.request("GET", f"/pulls/{number}"))

    async def review_comments(self, number: int) -> list[dict[str, Any]]:
        return list(await self.request("GET", f"/pulls/{number}/comments"))

    async def reviews(self, number: int) -> list[dict[str, Any]]:
        return list(await self.request("GET", f"/pulls/{number}/reviews"))

    async def reply_review_comment(self, number: int, comment_id: int, body: str) -> None:
        await self.request("POST", f"/pulls/{number}/comments/{comment_id}/replies",
                           json={"body": body})

    async def create_check_run(self, **fields: Any) -> dict[str, Any]:
        return dict(await self.request("POST", "/check-runs", json=fields))

    async def update_check_run(self, run_id: int, **fields: Any) -> dict[str, Any]:
        return dict(await self.request("PATCH", f"/check-runs/{run_id}", json=fields))

    async def create_ref(self, branch: str, sha: str) -> None:
        await self.request("POST", "/git/refs", json={"ref": f"refs/heads/{branch}", "sha": sha})
