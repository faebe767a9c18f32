"""GitHub's web flow for an App's user access tokens, as github.com runs it.

A browser is sent to ``GET /login/oauth/authorize?client_id&redirect_uri&state``; a person
signs in (``/login``, ``POST /session``: the simulator takes any name), authorizes the App
once, and is redirected to the redirect URI with ``code`` and ``state``. The App exchanges
the code at ``POST /login/oauth/access_token`` (client id, secret, code) for a ``ghu_``
token: JSON when asked with ``Accept: application/json``, form-encoded otherwise, and
errors (``bad_verification_code``, ``incorrect_client_credentials``,
``redirect_uri_mismatch``) with status 200, as GitHub answers them. The REST calls the token
makes (``/user``, ``/user/installations``...) are in rest.py.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from devkit.simulator.state import GitHubError, Grant, UserToken

if TYPE_CHECKING:
    from devkit.simulator.app import Simulator

SESSION = "user_session"
CODE_SECONDS = 600  # GitHub's codes last ten minutes
TOKEN_SECONDS = 8 * 3600  # user access tokens that expire last eight hours
REFRESH_SECONDS = 184 * 86400  # their refresh tokens about six months
DOCS = "https://docs.github.com/apps/managing-oauth-apps/"
ERRORS = {
    "incorrect_client_credentials": (
        "The client_id and/or client_secret passed are incorrect.",
        "troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials"),
    "redirect_uri_mismatch": (
        "The redirect_uri MUST match the registered callback URL for this application.",
        "troubleshooting-authorization-request-errors/#redirect-uri-mismatch2"),
    "bad_verification_code": (
        "The code passed is incorrect or expired.",
        "troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code"),
    "unsupported_grant_type": (
        "The grant type is not supported.",
        "troubleshooting-oauth-app-access-token-request-errors/"),
    "access_denied": (
        "The user has denied your application access.",
        "troubleshooting-authorization-request-errors/#access-denied"),
}

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><main>{body}</main></body></html>"""


@dataclass(frozen=True)
class Client:
    """An App's OAuth side: who it is to the web flow."""

    client_id: str
    secret: str
    name: str
    callback_urls: tuple[str, ...]


def error_params(error: str) -> dict[str, str]:
    description, uri = ERRORS[error]
    return {"error": error, "error_description": description, "error_uri": DOCS + uri}


def with_query(url: str, params: dict[str, str]) -> str:
    return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status_code=status)


async def form_of(request: Request) -> dict[str, str]:
    """The request's parameters: query string, then a form-encoded or JSON body."""
    values = dict(request.query_params)
    raw = (await request.body()).decode("utf-8", "replace")
    if "json" in request.headers.get("content-type", ""):
        try:
            data = json.loads(raw or "{}")
        except ValueError:
            data = {}
        values.update({k: str(v) for k, v in data.items()} if isinstance(data, dict) else {})
    else:
        values.update({k: v[0] for k, v in parse_qs(raw).items()})
    return values


class WebFlow:
    """The pages and the token exchange; state lives in the simulator's world."""

    def __init__(self, sim: Simulator) -> None:
        self.sim, self.world = sim, sim.world
        self.key = secrets.token_bytes(32)  # signs the pages' authenticity tokens

    # -- who is who --------------------------------------------------------------------
    def client(self, client_id: str) -> Client | None:
        if client_id and client_id == self.world.client_id:
            return Client(client_id, self.world.client_secret, "Handoff",
                          tuple(self.world.callback_urls))
        for app in self.world.apps.values():
            if app.client_id == client_id:
                urls = app.manifest.get("callback_urls") or []
                return Client(client_id, app.client_secret, app.name, tuple(map(str, urls)))
        return None

    def signed_in(self, request: Request) -> str | None:
        return self.world.web_sessions.get(request.cookies.get(SESSION, ""))

    def authenticity(self, session: str) -> str:
        return hmac.new(self.key, session.encode(), hashlib.sha256).hexdigest()

    # -- signing in to the simulated github.com ------------------------------------------
    async def login_page(self, request: Request) -> Response:
        back = request.query_params.get("return_to", "/")
        return page("Sign in to GitHub", (
            '<h1>Sign in to GitHub</h1><form method="post" action="/session">'
            '<label for="login_field">Username or email address</label>'
            '<input id="login_field" name="login" autofocus required>'
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password">'
            f'<input type="hidden" name="return_to" value="{html.escape(back)}">'
            '<input type="submit" name="commit" value="Sign in"></form>'))

    async def session(self, request: Request) -> Response:
        form = await form_of(request)
        login = form.get("login", "").strip()
        if not login:
            return page("Sign in to GitHub", "<p>Incorrect username or password.</p>", 422)
        cookie = secrets.token_urlsafe(24)
        self.world.web_sessions[cookie] = login
        back = form.get("return_to", "/")
        answer = RedirectResponse(back if back.startswith("/") else "/", status_code=302)
        answer.set_cookie(SESSION, cookie, httponly=True, samesite="lax", path="/")
        return answer

    # -- authorizing the App -----------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        form = await form_of(request) if request.method == "POST" else dict(
            request.query_params)
        client = self.client(form.get("client_id", ""))
        if client is None:
            return page("Page not found", "<h1>404</h1><p>This is not the web page you are "
                        "looking for.</p>", 404)
        state = form.get("state", "")
        redirect_uri = form.get("redirect_uri", "") or next(iter(client.callback_urls), "")
        if redirect_uri not in client.callback_urls:
            if not client.callback_urls:
                return page("Redirect URI mismatch", "<p>The redirect_uri is not associated "
                            "with this application.</p>", 400)
            return RedirectResponse(with_query(client.callback_urls[0], {
                **error_params("redirect_uri_mismatch"), "state": state}), status_code=302)
        login = self.signed_in(request)
        if login is None:
            query = {"client_id": client.client_id,
                     "return_to": f"/login/oauth/authorize?{urlencode(form)}"}
            return RedirectResponse(f"/login?{urlencode(query)}", status_code=302)
        if request.method == "POST":
            return self.decided(request, form, client, login, redirect_uri, state)
        if (login, client.client_id) in self.world.authorized:
            return self.grant(client, login, redirect_uri, state)
        return self.consent_page(request, form, client, login)

    def consent_page(self, request: Request, form: dict[str, str], client: Client,
                     login: str) -> Response:
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" '
                         f'value="{html.escape(v)}">' for k, v in form.items()
                         if k in ("client_id", "redirect_uri", "state"))
        token = self.authenticity(request.cookies.get(SESSION, ""))
        return page(f"Authorize {client.name}", (
            f"<h1>Authorize {html.escape(client.name)}</h1>"
            f"<p>Signed in as <b>{html.escape(login)}</b>. {html.escape(client.name)} will be "
            "able to verify your GitHub identity and know which resources you can access."
            '</p><form method="post" action="/login/oauth/authorize">' + hidden +
            f'<input type="hidden" name="authenticity_token" value="{token}">'
            '<button type="submit" name="authorize" value="0">Cancel</button>'
            '<button type="submit" name="authorize" value="1" id="js-oauth-authorize-btn">'
            f"Authorize {html.escape(client.name)}</button></form>"))

    def decided(self, request: Request, form: dict[str, str], client: Client, login: str,
                redirect_uri: str, state: str) -> Response:
        token = self.authenticity(request.cookies.get(SESSION, ""))
        if not hmac.compare_digest(form.get("authenticity_token", ""), token):
            return page("Unprocessable", "<p>Your browser did something unexpected.</p>", 422)
        if form.get("authorize") != "1":
            return RedirectResponse(with_query(redirect_uri, {
                **error_params("access_denied"), "state": state}), status_code=302)
        self.world.authorized.add((login, client.client_id))
        return self.grant(client, login, redirect_uri, state)

    def grant(self, client: Client, login: str, redirect_uri: str, state: str) -> Response:
        code = secrets.token_hex(10)
        self.world.grants[code] = Grant(code, client.client_id, login, redirect_uri,
                                        time.time() + CODE_SECONDS)
        params = {"code": code, **({"state": state} if state else {})}
        return RedirectResponse(with_query(redirect_uri, params), status_code=302)

    # -- the token exchange ------------------------------------------------------------
    async def access_token(self, request: Request) -> Response:
        form = await form_of(request)
        client = self.client(form.get("client_id", ""))
        if client is None or not hmac.compare_digest(form.get("client_secret", ""),
                                                     client.secret):
            return self.answer(request, error_params("incorrect_client_credentials"))
        if form.get("grant_type", "authorization_code") == "refresh_token":
            return self.answer(request, self.refreshed(client, form.get("refresh_token", "")))
        grant = self.world.grants.get(form.get("code", ""))
        if grant is None or grant.used or grant.client_id != client.client_id or \
                grant.expires_at <= time.time():
            return self.answer(request, error_params("bad_verification_code"))
        if form.get("redirect_uri") and form["redirect_uri"] != grant.redirect_uri:
            return self.answer(request, error_params("redirect_uri_mismatch"))
        grant.used = True
        return self.answer(request, self.mint(client, grant.login))

    def mint(self, client: Client, login: str) -> dict[str, Any]:
        token = UserToken(f"ghu_{secrets.token_urlsafe(27)}", login, client.client_id,
                          time.time() + TOKEN_SECONDS, f"ghr_{secrets.token_urlsafe(57)}")
        self.world.user_tokens[token.token] = token
        return {"access_token": token.token, "expires_in": TOKEN_SECONDS,
                "refresh_token": token.refresh_token, "refresh_token_expires_in":
                REFRESH_SECONDS, "token_type": "bearer", "scope": ""}

    def refreshed(self, client: Client, refresh_token: str) -> dict[str, Any]:
        """A refresh token works once: it and its access token are replaced."""
        old = next((t for t in self.world.user_tokens.values() if refresh_token and
                    t.refresh_token == refresh_token and t.client_id == client.client_id), None)
        if old is None:
            return {"error": "bad_refresh_token", "error_description":
                    "The refresh token passed is incorrect or expired.",
                    "error_uri": DOCS + "refreshing-user-access-tokens"}
        del self.world.user_tokens[old.token]
        return self.mint(client, old.login)

    @staticmethod
    def answer(request: Request, body: dict[str, Any]) -> Response:
        """JSON when asked for it, else ``application/x-www-form-urlencoded``; always 200."""
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(body)
        return Response(urlencode({k: str(v) for k, v in body.items()}),
                        media_type="application/x-www-form-urlencoded; charset=utf-8")

    # -- what the REST side asks -------------------------------------------------------
    def user_token(self, request: Request) -> UserToken:
        """The person a ``ghu_`` token in the request acts for."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        value = value.strip()
        if scheme.lower() not in ("token", "bearer") or not value:
            raise GitHubError(401, "Requires authentication")
        if value in self.world.tokens:  # an installation token: not a person
            raise GitHubError(403, "Resource not accessible by integration")
        token = self.world.user_tokens.get(value)
        if token is None or token.expires_at <= time.time():
            raise GitHubError(401, "Bad credentials")
        return token

    def routes(self) -> list[Route]:
        return [Route("/login", self.login_page, methods=["GET"]),
                Route("/session", self.session, methods=["POST"]),
                Route("/login/oauth/authorize", self.authorize, methods=["GET", "POST"]),
                Route("/login/oauth/access_token", self.access_token, methods=["POST"])]
