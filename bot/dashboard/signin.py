"""Signing people in with GitHub: the App's web flow, its user tokens, and sessions.

The browser goes to GitHub's authorize page with a ``state`` that a short-lived signed cookie
also holds; the callback's code is exchanged for a user access token, which asks GitHub who
the person is and which of the App's repositories they can read (``/user/installations``
and each one's ``repositories``). The token is kept sealed in the job store's ``sessions``
table (bot/dashboard/sessions.py), shared by every replica, never in a cookie or a log; the
cookie names a session by a random id, signed. The repository list is
asked again after ``repo_cache_seconds``; a session ends after ``session_hours`` or when
GitHub's token does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from bot.config import Settings
from bot.dashboard.sessions import Session, Sessions
from bot.github.client import next_page
from bot.github.registration import web_url
from bot.github.tls import client_context

log = logging.getLogger("handoff.dashboard")

SESSION_COOKIE = "handoff_session"
STATE_COOKIE = "handoff_oauth_state"
STATE_SECONDS = 600
MAX_PAGES = 20  # of 100 installations or repositories each


class SignInError(Exception):
    """GitHub refused or failed the sign-in; the message says what it answered."""


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the operator (every repository) or a person (the ones they read)."""

    login: str
    repos: frozenset[str] | None = None  # lower-case full names; None: all (the admin token)

    @property
    def admin(self) -> bool:
        return self.repos is None

    def can_read(self, repo: str) -> bool:
        return self.repos is None or repo.lower() in self.repos


def safe_next(value: str | None) -> str:
    """A local path to return to after signing in (never another site: no ``//host``, no
    backslash or control character a browser would drop or turn into a slash)."""
    if not value or not value.startswith("/") or value.startswith("//") or \
            any(c == "\\" or ord(c) < 0x21 or ord(c) == 0x7f for c in value):
        return "/jobs"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/jobs"


class Signer:
    """HMAC signatures for cookie values. The key is derived from the client secret, so any
    replica checks a sign-in's state cookie; without one, it is made at start."""

    def __init__(self, secret: str = "") -> None:
        self.key = hmac.new(secret.encode(), b"handoff dashboard cookies", hashlib.sha256
                            ).digest() if secret else secrets.token_bytes(32)

    def sign(self, value: str) -> str:
        mac = hmac.new(self.key, value.encode(), hashlib.sha256).digest()
        return f"{value}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def unsign(self, signed: str) -> str | None:
        value, _, _ = signed.rpartition(".")
        return value if value and hmac.compare_digest(self.sign(value), signed) else None


class GitHubSignIn:
    """The web flow against github.com, a GHES host or the simulator."""

    def __init__(self, settings: Settings, sessions: Sessions | None = None) -> None:
        """``sessions``: where sign-ins are kept (none: this one only checks and exchanges,
        as ``handoff doctor`` does)."""
        self.settings = settings
        self.client_id = settings.client_id or ""
        self.secret = settings.client_secret.get_secret_value() if settings.client_secret \
            else ""
        self.web, self.api = web_url(settings.github_url), settings.github_url
        self.signer = Signer(self.secret)
        self.kept = sessions

    @property
    def configured(self) -> bool:
        return bool(self.client_id and self.secret)

    # -- the state cookie --------------------------------------------------------------
    def start(self, redirect_uri: str, next_path: str) -> tuple[str, str]:
        """GitHub's authorize URL and the signed cookie value that must come back with it."""
        state = secrets.token_urlsafe(24)
        data = json.dumps({"s": state, "n": safe_next(next_path),
                           "e": time.time() + STATE_SECONDS}, separators=(",", ":"))
        cookie = self.signer.sign(base64.urlsafe_b64encode(data.encode()).decode())
        query = {"client_id": self.client_id, "redirect_uri": redirect_uri, "state": state}
        return f"{self.web}/login/oauth/authorize?{urlencode(query)}", cookie

    def check_state(self, cookie: str, state: str) -> str | None:
        """Where to go next when the callback's state is the one this browser was given."""
        value = self.signer.unsign(cookie)
        if value is None or not state:
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(value.encode()))
        except ValueError:
            return None
        if not hmac.compare_digest(str(data.get("s", "")), state) or data.get("e", 0) < time.time():
            return None
        return safe_next(str(data.get("n", "")))

    # -- GitHub ------------------------------------------------------------------------
    def http(self, base_url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base_url, timeout=self.settings.github_timeout,
                                 verify=client_context(),
                                 headers={"User-Agent": "Handoff"})

    async def token_answer(self, code: str, redirect_uri: str = "") -> dict[str, Any]:
        """GitHub's answer to exchanging a code: a token, or ``error`` (with status 200)."""
        form = {"client_id": self.client_id, "client_secret": self.secret, "code": code}
        if redirect_uri:
            form["redirect_uri"] = redirect_uri
        async with self.http(self.web) as http:
            try:
                answer = await http.post("/login/oauth/access_token", data=form,
                                         headers={"Accept": "application/json"})
                data = answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInError(f"GitHub's token exchange failed: {exc}") from exc
        if not isinstance(data, dict):
            raise SignInError(f"GitHub's token exchange answered {answer.status_code}")
        return data

    async def exchange(self, code: str, redirect_uri: str) -> tuple[str, float]:
        """The user access token for a callback's code, and when it expires."""
        data = await self.token_answer(code, redirect_uri)
        if not data.get("access_token"):
            said = data.get("error_description") or data.get("error") or "no token"
            raise SignInError(f"GitHub did not give a token: {said}")
        lifetime = float(data.get("expires_in") or self.settings.session_hours * 3600)
        return str(data["access_token"]), time.time() + lifetime

    async def get(self, http: httpx.AsyncClient, path: str, **params: Any) -> httpx.Response:
        answer = await http.get(path, params=params)
        if answer.status_code == 401:
            raise SignInError("GitHub no longer accepts this sign-in")
        if answer.status_code >= 400:
            raise SignInError(f"GitHub answered {answer.status_code} to GET {path}")
        return answer

    async def pages(self, http: httpx.AsyncClient, path: str, key: str) -> list[dict[str, Any]]:
        """Every page of a ``{total_count, <key>: [...]}`` list, following ``Link``."""
        out: list[dict[str, Any]] = []
        query: dict[str, Any] = {"per_page": 100}
        for _ in range(MAX_PAGES):
            answer = await self.get(http, path, **query)
            out += answer.json().get(key) or []
            following = next_page(answer)
            if following is None:
                break
            query = {**query, **following}
        return out

    async def identity(self, token: str) -> tuple[str, frozenset[str]]:
        """The person's login and the App's repositories they can read."""
        async with self.http(self.api) as http:
            http.headers["Authorization"] = f"Bearer {token}"
            try:
                login = str((await self.get(http, "/user")).json()["login"])
                repos: set[str] = set()
                for inst in await self.pages(http, "/user/installations", "installations"):
                    for repo in await self.pages(
                            http, f"/user/installations/{int(inst['id'])}/repositories",
                            "repositories"):
                        if (repo.get("permissions") or {}).get("pull", True):
                            repos.add(str(repo["full_name"]).lower())
            except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
                raise SignInError(f"GitHub's answer could not be read: {exc}") from exc
        return login, frozenset(repos)

    # -- sessions ----------------------------------------------------------------------
    @property
    def sessions(self) -> Sessions:
        if self.kept is None:
            raise RuntimeError("this sign-in keeps no sessions")
        return self.kept

    async def sign_in(self, code: str, redirect_uri: str) -> tuple[str, Session]:
        """A new session for the callback's code; its signed cookie value."""
        token, token_expires = await self.exchange(code, redirect_uri)
        login, repos = await self.identity(token)
        now = time.time()
        expires = min(now + self.settings.session_hours * 3600, token_expires)
        session = Session(login, token, expires, repos, now)
        sid = secrets.token_urlsafe(32)
        await self.sessions.add(sid, session)
        log.info("%s signed in to the dashboard (%d repositories)", login, len(repos))
        return self.signer.sign(sid), session

    async def session(self, cookie: str) -> tuple[str, Session] | None:
        """The session id this cookie names and its live session."""
        sid = self.signer.unsign(cookie) if cookie else None
        session = await self.sessions.get(sid) if sid else None
        return (sid, session) if sid and session else None

    async def sign_out(self, cookie: str) -> None:
        """End the cookie's session, on every replica."""
        if sid := self.signer.unsign(cookie) if cookie else None:
            await self.sessions.end(sid)

    async def viewer(self, cookie: str) -> Viewer | None:
        """The person this cookie signs in, their repository list fresh enough."""
        found = await self.session(cookie)
        if found is None:
            return None
        sid, session = found
        if session.repos_at + self.settings.repo_cache_seconds <= time.time():
            try:
                _, session.repos = await self.identity(session.token)
            except SignInError as exc:
                log.info("%s signed out: %s", session.login, exc)
                await self.sessions.end(sid)
                return None
            await self.sessions.set_repos(sid, session.repos, time.time())
        return Viewer(session.login, session.repos)
