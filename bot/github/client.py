"""Handoff's GitHub layer: App auth, repo-scoped installation tokens, paced writes, retries."""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from githubkit import AppAuthStrategy, GitHub, UnauthAuthStrategy
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed, RequestTimeout

from bot import metrics
from bot.github.retry import RetryPolicy, WaitTooLong, call_with_retries, retry_after_seconds
from bot.github.tls import client_context
from bot.logs import redact_data

log = logging.getLogger("handoff.github")

JOB_PERMISSIONS = {"contents": "write", "pull_requests": "write", "issues": "write",
                   "checks": "write", "metadata": "read"}
WRITE_ROLES = {"admin", "maintain", "write"}


class GitHubApiError(Exception):
    """A GitHub call failed for good; the message says what GitHub answered."""

    def __init__(self, message: str, status: int | None = None,
                 retry_at: float | None = None, unavailable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retry_at = retry_at  # set when GitHub asked for a long wait (rate limits)
        # GitHub did not answer, or answered 5xx/429, past the retries: it may well answer
        # later (as opposed to refusing this request for good).
        self.unavailable = unavailable


def _answer(exc: BaseException) -> str:
    if isinstance(exc, RequestFailed):
        resp = exc.response
        try:
            body = resp.json()
            message = str(body.get("message", ""))
            details = [str(e.get("message") or " ".join(str(e.get(k, "")) for k in (
                "resource", "field", "code")).strip()) for e in body.get("errors") or []
                if isinstance(e, dict)]
        except (ValueError, AttributeError):
            message, details = resp.text[:200], []
        if details:  # a 422 says what is invalid here ("No commits between main and ...")
            message = f"{message}: {'; '.join(details)[:300]}"
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


class SharedTransport(httpx.AsyncHTTPTransport):
    """One connection pool for every call: githubkit opens a client per request outside
    ``async with`` and closes it after, so the pool lives here and ignores those closes."""

    async def aclose(self) -> None:
        pass

    async def shutdown(self) -> None:
        await super().aclose()


def next_page(resp: Any) -> dict[str, Any] | None:
    """The query of the ``Link: <...>; rel="next"`` page GitHub names, or None on the last."""
    for part in resp.headers.get("link", "").split(","):
        url, _, rels = part.partition(";")
        if 'rel="next"' in rels:
            query: dict[str, Any] = dict(parse_qsl(urlsplit(url.strip().strip("<>")).query))
            if "page" in query:
                query["page"] = int(query["page"])
            if "per_page" in query:
                query["per_page"] = int(query["per_page"])
            return query
    return None


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
        self.transport = SharedTransport(verify=client_context(), retries=0)
        # A cache of its own: githubkit's shared default keys JWTs by app id alone.
        self.app = GitHub(AppAuthStrategy(app_id, private_key), cache_strategy=MemCacheStrategy(),
                          **self._options())
        # One client for every installation: each call brings its own token (per-call auth).
        self.rest = GitHub(UnauthAuthStrategy(), **self._options())
        self.tokens: dict[tuple[int, str, tuple[tuple[str, str], ...]], _Token] = {}

    def _options(self) -> dict[str, Any]:
        # Retries are ours (bot.github.retry, bounded); githubkit sleeps unbounded.
        # Bodies are not validated by githubkit: GitHub's 422 says what is wrong, and says it
        # as a GitHubApiError.
        return {"base_url": self.base_url, "timeout": self.timeout, "auto_retry": False,
                "http_cache": False, "user_agent": "Handoff", "ssl_verify": client_context(),
                "async_transport": self.transport, "rest_api_validate_body": False}

    async def close(self) -> None:
        """Close the shared connection pool."""
        await self.transport.shutdown()

    async def __aenter__(self) -> GitHubApp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
            raise GitHubApiError(f"{what}: GitHub answered {_answer(exc)}", status,
                                 unavailable=_retryable(exc)) from exc

    async def installation_token(self, installation_id: int, repo_name: str,
                                 fresh: bool = False,
                                 permissions: dict[str, str] | None = None) -> str:
        """A token for one repository (with the job's permissions unless others are named),
        cached until five minutes before it expires."""
        permissions = permissions or JOB_PERMISSIONS
        key = (installation_id, repo_name, tuple(sorted(permissions.items())))
        cached = self.tokens.get(key)
        if cached and not fresh and cached.expires_at - 300 > time.time():
            return cached.value

        async def mint() -> Any:
            return await self.app.arequest(
                "POST", f"/app/installations/{installation_id}/access_tokens",
                json={"repositories": [repo_name], "permissions": permissions})

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
        resp = await self.call(send, f"{method} {url}")
        return resp.json() if resp.content else None

    async def deliveries(self, max_pages: int = 10) -> list[dict[str, Any]]:
        """The App's recent webhook deliveries, newest first, following GitHub's cursor."""
        out: list[dict[str, Any]] = []
        query: dict[str, Any] = {"per_page": 100}
        for _ in range(max_pages):
            async def send(query: dict[str, Any] = query) -> Any:
                return await self.app.rest.apps.async_list_webhook_deliveries(**query)
            resp = await self.call(send, "listing webhook deliveries")
            out += resp.json()
            following = next_page(resp)
            if following is None:
                break
            query = {"per_page": 100, **following}
        return out


class RepoClient:
    """Calls about one repository, with its own installation token, through githubkit's
    typed REST methods on the App's shared client."""

    def __init__(self, app: GitHubApp, installation_id: int, full_name: str) -> None:
        self.app, self.installation_id, self.full_name = app, installation_id, full_name
        self.owner, self.name = full_name.split("/", 1)
        self.rest = app.rest.rest
        # Roles asked for through this client: one per job run, so a run asks once per person
        # (its requester, commenters, editors) and the next run asks again.
        self.roles: dict[str, str] = {}

    async def token(self, fresh: bool = False) -> str:
        return await self.app.installation_token(self.installation_id, self.name, fresh)

    async def call(self, what: str, fn: Callable[[dict[str, str]], Awaitable[Any]],
                   write: bool = False) -> Any:
        """One call given the auth headers; writes are paced, a 401 re-mints the token once."""
        refreshed = False

        async def send() -> Any:
            nonlocal refreshed
            if write:
                await self.app.pacer.wait(self.installation_id)
            try:
                return await fn({"Authorization": f"token {await self.token()}"})
            except RequestFailed as exc:
                if exc.response.status_code != 401 or refreshed:
                    raise
                refreshed = True
                log.info("token for %s rejected; minting a new one", self.full_name)
                return await fn({"Authorization": f"token {await self.token(fresh=True)}"})

        return await self.app.call(send, f"{what} ({self.full_name})")

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None) -> Any:
        """Any REST call on this repository (for calls without a method below)."""
        url = f"/repos/{self.full_name}{path}"
        if json is not None:  # every text Handoff writes to GitHub passes here or in _write
            json = redact_data(json)

        async def send(headers: dict[str, str]) -> Any:
            return await self.app.rest.arequest(method, url, json=json, params=params,
                                                headers=headers)

        resp = await self.call(f"{method} {url}", send, write=method != "GET")
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    async def _read(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                    **kwargs: Any) -> Any:
        resp = await self.call(what, lambda h: fn(*args, headers=h, **kwargs))
        return resp.json()

    async def _write(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                     **fields: Any) -> Any:
        data = redact_data(fields)  # every text Handoff writes to GitHub passes here
        resp = await self.call(what, lambda h: fn(*args, headers=h, data=data), write=True)
        return resp.json() if resp.content else None

    async def _all(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                   **kwargs: Any) -> list[dict[str, Any]]:
        """Every page of a list, 100 at a time, following GitHub's ``Link`` header."""
        out: list[dict[str, Any]] = []
        query: dict[str, Any] = {**kwargs, "per_page": 100}
        while True:
            async def send(headers: dict[str, str], query: dict[str, Any] = query) -> Any:
                return await fn(*args, headers=headers, **query)
            resp = await self.call(what, send)
            out += resp.json()
            following = next_page(resp)
            if following is None:
                return out
            query = {**query, **following}

    # -- the calls Handoff makes -------------------------------------------------------------

    async def get_repo(self) -> dict[str, Any]:
        return dict(await self._read("getting the repository", self.rest.repos.async_get,
                                     self.owner, self.name))

    async def read_file(self, path: str) -> str | None:
        """A text file of the default branch, or None when there is none (404)."""
        try:
            data = await self._read(f"reading {path}", self.rest.repos.async_get_content,
                                    self.owner, self.name, path)
        except GitHubApiError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("type", "file") != "file":
            return None
        return base64.b64decode(data.get("content") or "").decode("utf-8", "replace")

    async def get_issue(self, number: int) -> dict[str, Any]:
        return dict(await self._read(f"getting issue #{number}", self.rest.issues.async_get,
                                     self.owner, self.name, number))

    async def list_comments(self, number: int) -> list[dict[str, Any]]:
        return await self._all(f"listing comments on #{number}",
                               self.rest.issues.async_list_comments, self.owner, self.name,
                               number)

    async def create_comment(self, number: int, body: str) -> dict[str, Any]:
        return dict(await self._write(f"commenting on #{number}",
                                      self.rest.issues.async_create_comment, self.owner,
                                      self.name, number, body=body))

    async def update_comment(self, comment_id: int, body: str) -> dict[str, Any]:
        return dict(await self._write(f"editing comment {comment_id}",
                                      self.rest.issues.async_update_comment, self.owner,
                                      self.name, comment_id, body=body))

    async def react_issue(self, number: int, content: str = "eyes") -> None:
        await self._write(f"reacting to #{number}", self.rest.reactions.async_create_for_issue,
                          self.owner, self.name, number, content=content)

    async def react_comment(self, comment_id: int, content: str = "eyes") -> None:
        await self._write(f"reacting to comment {comment_id}",
                          self.rest.reactions.async_create_for_issue_comment, self.owner,
                          self.name, comment_id, content=content)

    async def react_review_comment(self, comment_id: int, content: str = "eyes") -> None:
        await self._write(f"reacting to review comment {comment_id}",
                          self.rest.reactions.async_create_for_pull_request_review_comment,
                          self.owner, self.name, comment_id, content=content)

    async def permission(self, login: str) -> str:
        """The user's role on the repository (admin, maintain, write, triage, read or none),
        asked once per client."""
        if login not in self.roles:
            self.roles[login] = await self._permission(login)
        return self.roles[login]

    async def _permission(self, login: str) -> str:
        try:
            data = await self._read(f"getting {login}'s permission",
                                    self.rest.repos.async_get_collaborator_permission_level,
                                    self.owner, self.name, login)
        except GitHubApiError as exc:
            if exc.status == 404:
                return "none"
            raise
        return str(data.get("role_name") or data.get("permission") or "none")

    async def find_pull(self, branch: str) -> dict[str, Any] | None:
        pulls = await self._all(f"finding the pull request of {branch}",
                                self.rest.pulls.async_list, self.owner, self.name,
                                head=f"{self.owner}:{branch}", state="open")
        return dict(pulls[0]) if pulls else None

    async def create_pull(self, **fields: Any) -> dict[str, Any]:
        return dict(await self._write("opening a pull request", self.rest.pulls.async_create,
                                      self.owner, self.name, **fields))

    async def update_pull(self, number: int, **fields: Any) -> dict[str, Any]:
        return dict(await self._write(f"updating pull request #{number}",
                                      self.rest.pulls.async_update, self.owner, self.name,
                                      number, **fields))

    async def get_pull(self, number: int) -> dict[str, Any]:
        return dict(await self._read(f"getting pull request #{number}",
                                     self.rest.pulls.async_get, self.owner, self.name, number))

    async def review_comments(self, number: int) -> list[dict[str, Any]]:
        return await self._all(f"listing review comments on #{number}",
                               self.rest.pulls.async_list_review_comments, self.owner,
                               self.name, number)

    async def reviews(self, number: int) -> list[dict[str, Any]]:
        return await self._all(f"listing reviews of #{number}",
                               self.rest.pulls.async_list_reviews, self.owner, self.name, number)

    async def reply_review_comment(self, number: int, comment_id: int, body: str) -> None:
        await self._write(f"replying to review comment {comment_id}",
                          self.rest.pulls.async_create_reply_for_review_comment, self.owner,
                          self.name, number, comment_id, body=body)

    async def create_check_run(self, **fields: Any) -> dict[str, Any]:
        return dict(await self._write("creating a check run", self.rest.checks.async_create,
                                      self.owner, self.name, **fields))

    async def update_check_run(self, run_id: int, **fields: Any) -> dict[str, Any]:
        return dict(await self._write(f"updating check run {run_id}",
                                      self.rest.checks.async_update, self.owner, self.name,
                                      run_id, **fields))
