"""The dashboard `handoff serve` shows: charts, the queue, recent jobs and each transcript.

Server-rendered with Jinja2 (autoescape on: transcripts hold untrusted model and agent
output); the charts are SVG drawn here. People sign in with GitHub (the App's web flow,
bot/dashboard/signin.py) and see the jobs of the repositories they can read; another job is
404 to them. Operators use the admin token (``HANDOFF_DASHBOARD_TOKEN``) in the login form,
which sets an HttpOnly, SameSite=Strict cookie, or as ``Authorization: Bearer``, and see
everything. A strict Content-Security-Policy allows only the dashboard's own script and
stylesheet; a running job's page polls ``/jobs/{id}/feed`` for new transcript entries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.config import Settings
from bot.dashboard import charts
from bot.dashboard.sessions import Sessions
from bot.dashboard.signin import (
    SESSION_COOKIE,
    STATE_COOKIE,
    STATE_SECONDS,
    GitHubSignIn,
    SignInError,
    Viewer,
    safe_next,
)
from bot.dashboard.stats import Filters, recent_jobs, summarize, window_jobs
from bot.github.registration import web_url
from bot.jobs.states import State
from bot.jobs.store import Job, Jobs
from bot.logs import redact

HERE = Path(__file__).resolve().parent
COOKIE = "handoff_dashboard"
LIVE_STATES = ("queued", "running")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
OFF = ("The dashboard is off: set HANDOFF_CLIENT_ID and HANDOFF_CLIENT_SECRET (sign in "
       "with GitHub) or HANDOFF_DASHBOARD_TOKEN to turn it on.\n")
MAX_FORM = 4096
ADMIN = Viewer("admin")


def _seconds(value: Any) -> str:
    try:
        s = float(value)
    except (TypeError, ValueError):
        return ""
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m {s % 60:02.0f}s"


def _when(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value)) if value else ""


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, default=str)


class Dashboard:
    """The pages, their login, and the feed a running job's page polls."""

    def __init__(self, store: Jobs, settings: Settings) -> None:
        self.store, self.settings = store, settings
        token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else ""
        self.token = token.encode()
        # The cookie holds a value derived from the token, never the token itself.
        self.session = hmac.new(self.token, b"handoff-dashboard-session",
                                hashlib.sha256).hexdigest().encode() if token else b""
        self.secrets = tuple(s for s in settings.secret_values() if s)
        self.github = web_url(settings.github_url)
        self.signin = GitHubSignIn(settings, Sessions(store, settings.client_secret.
                                                      get_secret_value())
                                   if settings.client_secret else None)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
        self.env.filters.update(seconds=_seconds, when=_when, pretty=_pretty)
        self.env.globals.update(github=self.github, sign_in=self.signin.configured,
                                admin_token=bool(self.token))

    @property
    def enabled(self) -> bool:
        return bool(self.token) or self.signin.configured

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/oauth/login", self.oauth_login, methods=["GET"]),
            Route("/oauth/callback", self.oauth_callback, methods=["GET"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/jobs", self.jobs, methods=["GET"]),
            Route("/jobs/{job_id:int}", self.job, methods=["GET"]),
            Route("/jobs/{job_id:int}/feed", self.feed, methods=["GET"]),
            Route("/dashboard/static/{name}", self.static, methods=["GET"]),
        ]

    # -- responses ---------------------------------------------------------------------
    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def off(self) -> Response:
        return Response(OFF, status_code=404, media_type="text/plain", headers=HEADERS)

    # -- authentication ----------------------------------------------------------------
    def admin(self, request: Request) -> bool:
        """The admin token as a bearer header or its session cookie, in constant time."""
        if not self.token:
            return False
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return hmac.compare_digest(header[7:].strip().encode(), self.token)
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session)

    async def viewer(self, request: Request) -> Viewer | None:
        if self.admin(request):
            return ADMIN
        if "authorization" in request.headers or not self.signin.configured:
            return None
        return await self.signin.viewer(request.cookies.get(SESSION_COOKIE, ""))

    async def gate(self, request: Request, page: bool = True) -> Viewer | Response:
        """Who may see the dashboard, else the answer to give."""
        if not self.enabled:
            return self.off()
        if (viewer := await self.viewer(request)) is not None:
            return viewer
        if page and "authorization" not in request.headers:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303,
                                    headers=HEADERS)
        return JSONResponse({"error": "log in, or send Authorization: Bearer <token>"},
                            status_code=401, headers=HEADERS)

    def secure(self, request: Request) -> bool:
        return request.url.scheme == "https" or \
            urlsplit(self.settings.public_url).scheme == "https"

    async def login(self, request: Request) -> Response:
        if not self.enabled:
            return self.off()
        next_path = safe_next(request.query_params.get("next"))
        if request.method == "GET":
            return self.page("login.html", next=next_path)
        body = await request.body()
        form = parse_qs(body[:MAX_FORM].decode("utf-8", "replace"))
        given, next_path = form.get("token", [""])[0], safe_next(form.get("next", [""])[0])
        if not self.token or len(body) > MAX_FORM or \
                not hmac.compare_digest(given.encode(), self.token):
            return self.page("login.html", status=403, next=next_path,
                             error="That token is not the one set.")
        answer = RedirectResponse(next_path, status_code=303, headers=HEADERS)
        answer.set_cookie(COOKIE, self.session.decode(), httponly=True, samesite="strict",
                          secure=self.secure(request), path="/")
        return answer

    def callback_url(self, request: Request) -> str:
        base = self.settings.public_url or str(request.base_url).rstrip("/")
        return f"{base}/oauth/callback"

    async def oauth_login(self, request: Request) -> Response:
        """Off to GitHub's authorize page, with a state this browser's cookie holds too."""
        if not self.signin.configured:
            return self.off()
        target, cookie = self.signin.start(self.callback_url(request),
                                           request.query_params.get("next", ""))
        answer = RedirectResponse(target, status_code=303, headers=HEADERS)
        answer.set_cookie(STATE_COOKIE, cookie, max_age=STATE_SECONDS, httponly=True,
                          samesite="lax", secure=self.secure(request), path="/oauth")
        return answer

    async def oauth_callback(self, request: Request) -> Response:
        """GitHub's redirect back: the state checked, the code exchanged, a session made."""
        if not self.signin.configured:
            return self.off()
        params = request.query_params
        next_path = self.signin.check_state(request.cookies.get(STATE_COOKIE, ""),
                                            params.get("state", ""))
        if next_path is None:
            return self.refused(400, "This sign-in was not started here, or took too long "
                                "(its state does not match). Sign in again.")
        if params.get("error"):
            said = params.get("error_description") or params["error"]
            return self.refused(403, f"GitHub said: {said}")
        try:
            cookie, session = await self.signin.sign_in(params.get("code", ""),
                                                        self.callback_url(request))
        except SignInError as exc:
            return self.refused(502, f"Signing in failed: {exc}")
        answer = RedirectResponse(next_path, status_code=303, headers=HEADERS)
        answer.delete_cookie(STATE_COOKIE, path="/oauth", httponly=True, samesite="lax")
        answer.set_cookie(SESSION_COOKIE, cookie, max_age=int(session.expires_at - time.time()),
                          httponly=True, samesite="lax", secure=self.secure(request), path="/")
        return answer

    def refused(self, status: int, message: str) -> Response:
        answer = self.page("login.html", status=status, next="/jobs", error=message)
        answer.delete_cookie(STATE_COOKIE, path="/oauth", httponly=True, samesite="lax")
        return answer

    async def logout(self, request: Request) -> Response:
        if self.signin.configured:
            await self.signin.sign_out(request.cookies.get(SESSION_COOKIE, ""))
        answer = RedirectResponse("/login", status_code=303, headers=HEADERS)
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
        return answer

    # -- pages -------------------------------------------------------------------------
    async def jobs(self, request: Request) -> Response:
        viewer = await self.gate(request)
        if isinstance(viewer, Response):
            return viewer
        filters = Filters.of(request.query_params)
        now = time.time()
        window = await window_jobs(self.store, viewer, filters, now)
        queued = await recent_jobs(self.store, viewer, filters, state="queued") \
            if filters.state in ("", "queued") else []
        recent = sorted(window, key=lambda j: -j.id)[:100] if window else \
            await recent_jobs(self.store, viewer, filters)
        summary = summarize(window, filters.days, now)
        return self.page("jobs.html", viewer=viewer, filters=filters, summary=summary,
                         charts=charts.all_charts(summary), people=sorted(
                             {j.requested_by for j in window if j.requested_by}),
                         repos=sorted({j.repo for j in window}),
                         queued=[self.row(j) for j in queued],
                         recent=[self.row(j) for j in recent], now=now)

    async def readable(self, request: Request, viewer: Viewer) -> Job | None:
        """The job in the path, when this viewer may read its repository."""
        job = await self.store.get_job(int(request.path_params["job_id"]))
        return job if job is not None and viewer.can_read(job.repo) else None

    async def job(self, request: Request) -> Response:
        viewer = await self.gate(request)
        if isinstance(viewer, Response):
            return viewer
        job = await self.readable(request, viewer)
        if job is None:
            return self.page("missing.html", status=404)
        entries = self.transcript(job)
        return self.page("job.html", viewer=viewer, job=self.row(job), entries=entries,
                         next=len(entries),
                         live=job.state in LIVE_STATES)

    async def feed(self, request: Request) -> Response:
        """New transcript entries after ``after`` (HTML, escaped here) and the job's state."""
        viewer = await self.gate(request, page=False)
        if isinstance(viewer, Response):
            return viewer
        job = await self.readable(request, viewer)
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404, headers=HEADERS)
        try:
            after = max(0, int(request.query_params.get("after", "0")))
        except ValueError:
            after = 0
        entries = self.transcript(job)
        macros = self.env.get_template("_entries.html").module
        html = "".join(str(macros.entry(e)) for e in entries[after:])  # type: ignore[attr-defined]
        status = str(macros.status(self.row(job)))  # type: ignore[attr-defined]
        return JSONResponse({"html": html, "next": len(entries), "state": job.state,
                             "stage": job.stage, "live": job.state in LIVE_STATES,
                             "status": status}, headers=HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name],
                        headers={**HEADERS, "Cache-Control": "max-age=300"})

    # -- data --------------------------------------------------------------------------
    def row(self, job: Job) -> dict[str, Any]:
        """What the pages show of a job."""
        result = job.result
        spend, timings = result.agent.spend, result.timings
        pr_url = str(result.delivery.pr_url or (
            f"{self.github}/{job.repo}/pull/{job.pr_number}" if job.pr_number else ""))
        end = job.finished_at or (time.time() if job.state == State.RUNNING else None)
        return {
            "id": job.id, "repo": job.repo, "kind": job.kind, "state": job.state,
            "stage": result.delivery.final_stage if job.state == State.SUCCEEDED and
            result.delivery.final_stage else job.stage,
            "issue": job.issue_number, "pr_number": job.pr_number,
            "issue_url": f"{self.github}/{job.repo}/issues/{job.issue_number}",
            "pr_url": pr_url if pr_url.startswith(("https://", "http://")) else "",
            "requested_by": job.requested_by, "reason": redact(job.reason),
            "category": job.category, "attempts": job.attempts,
            "created_at": job.created_at, "started_at": job.started_at,
            "finished_at": job.finished_at,
            "elapsed": (end - job.started_at) if job.started_at and end else None,
            "timings": timings, "cost": spend.cost_usd if spend.steps else None,
            "steps": spend.steps or None,
            "tokens": spend.input_tokens + spend.output_tokens,
            "model": result.agent.model, "summary": redact(result.summary),
            "environment": result.setup.environment,
            "environment_reason": redact(result.setup.environment_reason),
        }

    def transcript_path(self, job: Job) -> Path:
        given = job.result.agent.transcript
        return Path(given) if given else \
            self.settings.data_dir / "transcripts" / f"job-{job.id}.jsonl"

    def transcript(self, job: Job) -> list[dict[str, Any]]:
        """The job's transcript entries, redacted once more; a line still being written is
        left for the next read."""
        try:
            text = self.transcript_path(job).read_text(errors="replace")
        except OSError:
            return []
        entries: list[dict[str, Any]] = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            for secret in self.secrets:
                line = line.replace(secret, "[redacted]")
            try:
                entry = json.loads(redact(line))
            except ValueError:
                entry = {"kind": "unreadable", "text": line}
            if isinstance(entry, dict):
                entries.append(entry)
        return entries


def routes(store: Jobs, settings: Settings) -> list[BaseRoute]:
    """The dashboard's routes, for ``create_app``."""
    return Dashboard(store, settings).routes()
