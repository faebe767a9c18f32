"""Registering the App from ``app.yml`` with GitHub's manifest flow (``handoff setup``).

A page on 127.0.0.1 posts the manifest to GitHub (``/settings/apps/new``, or
``/organizations/ORG/settings/apps/new``; on GHES the same paths on its host); GitHub shows
it, creates the App and redirects the browser back with a one-time ``code``, which is
exchanged (``POST /app-manifests/{code}/conversions``, no auth) for the App's id, slug,
private key, webhook secret and OAuth client id and secret (the dashboard's sign-in). Those go
into ``.env`` (mode 0600) and are never printed.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import yaml
from githubkit import GitHub, UnauthAuthStrategy
from githubkit.exception import RequestError, RequestFailed
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from bot.config import ROOT
from bot.github.tls import client_context
from bot.server import running


class RegistrationError(Exception):
    """The App could not be registered; the message says why."""


def find_manifest(path: Path | None = None) -> Path:
    """``app.yml``: the one given, else the current folder's, else the source checkout's."""
    for candidate in ([path] if path else [Path("app.yml"), ROOT / "app.yml"]):
        if candidate.is_file():
            return candidate
    raise RegistrationError(f"no app.yml found (looked for {path or 'app.yml'})")


def manifest(app_yml: Path, webhook_url: str, redirect_url: str,
             name: str | None = None) -> dict[str, Any]:
    """``app.yml`` as GitHub's manifest, with where GitHub sends webhooks and the browser."""
    data = dict(yaml.safe_load(app_yml.read_text()))
    data["redirect_url"] = redirect_url
    data["hook_attributes"] = {**(data.get("hook_attributes") or {}), "url": webhook_url,
                               "active": True}
    data["public"] = False
    # The dashboard's sign-in comes back beside the webhook: https://HOST/oauth/callback.
    data["callback_urls"] = [callback_url(webhook_url)]
    data["request_oauth_on_install"] = False
    if name:
        data["name"] = name
    return data


def callback_url(webhook_url: str) -> str:
    """Where GitHub sends people back after signing in: ``/oauth/callback`` beside the
    webhook's path (``https://HOST/webhook`` → ``https://HOST/oauth/callback``)."""
    return webhook_url.rstrip("/").rsplit("/", 1)[0] + "/oauth/callback"


def web_url(api_url: str) -> str:
    """Where people use GitHub, from its API URL: github.com, a GHES host (``/api/v3``), or
    (the simulator, a proxy) the same host."""
    api_url = api_url.rstrip("/")
    parts = urlsplit(api_url)
    if parts.hostname == "api.github.com":
        return "https://github.com"
    if parts.path.endswith("/api/v3"):
        return api_url.removesuffix("/api/v3")
    return api_url


def new_app_url(api_url: str, state: str, org: str | None = None) -> str:
    """The form GitHub takes a manifest at, for a user or for an organisation."""
    path = f"/organizations/{org}/settings/apps/new" if org else "/settings/apps/new"
    return f"{web_url(api_url)}{path}?{urlencode({'state': state})}"


async def convert(api_url: str, code: str, timeout: float = 30.0) -> dict[str, Any]:
    """Exchange the redirect's code for the new App's credentials (the code works once)."""
    gh = GitHub(UnauthAuthStrategy(), base_url=api_url.rstrip("/"), timeout=timeout,
                auto_retry=False, http_cache=False, user_agent="Handoff",
                ssl_verify=client_context())
    try:
        resp = await gh.rest.apps.async_create_from_manifest(code)
    except RequestFailed as exc:
        raise RegistrationError(f"GitHub refused the code: {exc.response.status_code} "
                                f"{exc.response.text[:200]}") from exc
    except RequestError as exc:
        raise RegistrationError(f"could not reach GitHub at {api_url}: {exc}") from exc
    return dict(resp.json())


def env_line(key: str, value: str) -> str:
    """``KEY=value`` as python-dotenv, Compose and ``kubectl --from-env-file`` all read it.

    kubectl keeps quotes as part of the value, so a value goes unquoted whenever it can: a
    PEM key is written on one line with literal ``\\n`` (the settings turn those back into
    newlines). Only a value no unquoted form can carry (other newlines, `` #``, edge
    spaces, a leading quote) is double-quoted, and ``handoff doctor`` flags quotes it reads.
    """
    if "-----BEGIN" in value:
        value = value.replace("\n", "\\n")
    unquoted = ("\n" not in value and " #" not in value and value == value.strip()
                and value[:1] not in ("'", '"', "#"))
    if unquoted:
        return f"{key}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{key}="{escaped}"'


def write_env(path: Path, values: dict[str, str]) -> None:
    """Set these keys in a .env file, keeping its other lines; the file is made 0600 first."""
    lines = path.read_text().splitlines() if path.exists() else []
    pattern = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
    kept: list[str] = []
    skipping_until = ""  # the quote that closes a multi-line value being replaced
    for line in lines:
        if skipping_until:
            if line.rstrip().endswith(skipping_until):
                skipping_until = ""
            continue
        m = pattern.match(line)
        if m and m.group(1) in values:
            value = m.group(2).strip()
            if value[:1] in ("'", '"') and not (len(value) > 1 and value.endswith(value[0])):
                skipping_until = value[0]
            continue
        kept.append(line)
    text = "\n".join([*kept, *(env_line(k, v) for k, v in values.items())]) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def env_values(app: dict[str, Any], api_url: str) -> dict[str, str]:
    values = {"HANDOFF_APP_ID": str(app["id"]), "HANDOFF_APP_SLUG": str(app["slug"]),
              "HANDOFF_PRIVATE_KEY": str(app["pem"]),
              "HANDOFF_WEBHOOK_SECRET": str(app.get("webhook_secret") or "")}
    if app.get("client_id") and app.get("client_secret"):
        values["HANDOFF_CLIENT_ID"] = str(app["client_id"])
        values["HANDOFF_CLIENT_SECRET"] = str(app["client_secret"])
    if api_url.rstrip("/") != "https://api.github.com":
        values["HANDOFF_GITHUB_URL"] = api_url.rstrip("/")
    return values


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Register Handoff</title></head>
<body><p>Sending the App's manifest to GitHub&hellip;</p>
<form id="register" method="post" action="{action}">
<input type="hidden" name="manifest" value="{manifest}">
<button type="submit">Register the GitHub App</button></form>
<script>document.getElementById("register").submit()</script></body></html>"""

DONE = """<!doctype html><html><head><meta charset="utf-8"><title>Handoff registered</title>
</head><body><p>Registered the GitHub App <b>{slug}</b> and wrote its settings to {env}.</p>
<p>Next: <a href="{install}">install it</a> on the repositories it may work in.</p>
</body></html>"""


@dataclass
class Registration:
    """One run of the flow: the local page, the state it checks and what it registered."""

    api_url: str
    webhook_url: str
    env_file: Path
    app_yml: Path
    org: str | None = None
    name: str | None = None
    state: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    base: str = ""  # this page's own URL, once it listens
    done: asyncio.Event = field(default_factory=asyncio.Event)
    app: dict[str, Any] | None = None
    error: str | None = None

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/", self.start), Route("/callback", self.callback)])

    async def start(self, request: Request) -> Response:
        data = manifest(self.app_yml, self.webhook_url, f"{self.base}/callback", self.name)
        return HTMLResponse(PAGE.format(
            action=html.escape(new_app_url(self.api_url, self.state, self.org)),
            manifest=html.escape(json.dumps(data))))

    async def callback(self, request: Request) -> Response:
        code = request.query_params.get("code", "")
        if not secrets.compare_digest(request.query_params.get("state", ""), self.state):
            return HTMLResponse("<p>This answer is not for this registration (state does not "
                                "match); start again with <code>handoff setup</code>.</p>", 400)
        if not code:
            return HTMLResponse("<p>GitHub sent no code.</p>", 400)
        if self.app is not None:
            return HTMLResponse("<p>Already registered.</p>", 409)
        try:
            app = await convert(self.api_url, code)
            write_env(self.env_file, env_values(app, self.api_url))
        except (RegistrationError, OSError, KeyError) as exc:
            self.error = str(exc)
            self.done.set()
            return HTMLResponse(f"<p>Registration failed: {html.escape(str(exc))}</p>", 502)
        self.app = app
        self.done.set()
        return HTMLResponse(DONE.format(slug=html.escape(str(app["slug"])),
                                        env=html.escape(str(self.env_file)),
                                        install=html.escape(install_url(app, self.api_url))))


def install_url(app: dict[str, Any], api_url: str) -> str:
    html_url = str(app.get("html_url") or f"{web_url(api_url)}/apps/{app['slug']}")
    return f"{html_url}/installations/new"


async def register(reg: Registration, host: str = "127.0.0.1", port: int = 0,
                   ready: Callable[[str], None] = print, timeout: float = 900) -> dict[str, Any]:
    """Serve the page until GitHub's redirect is handled; returns the App (its secrets are in
    ``reg.env_file``, not to be printed)."""
    async with running(reg.asgi(), host, port) as url:
        reg.base = url
        ready(url)
        try:
            await asyncio.wait_for(reg.done.wait(), timeout)
        except TimeoutError as exc:
            raise RegistrationError(f"no answer from GitHub in {timeout:.0f}s") from exc
        await asyncio.sleep(0.1)  # let the browser get its page before the server stops
    if reg.app is None:
        raise RegistrationError(reg.error or "registration failed")
    return reg.app
