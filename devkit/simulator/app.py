"""A local GitHub: REST (checked against GitHub's OpenAPI), App auth, real git, webhooks out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from devkit.simulator import control, rest
from devkit.simulator import git as simgit
from devkit.simulator.attachments import Attachments
from devkit.simulator.ci import ScriptedCI
from devkit.simulator.oauth import WebFlow
from devkit.simulator.openapi import Operation, Spec
from devkit.simulator.render import Renderer
from devkit.simulator.state import (
    Comment,
    Delivery,
    Fault,
    GitHubError,
    Installation,
    Issue,
    RegisteredApp,
    Repo,
    Review,
    ReviewComment,
    Token,
    User,
    World,
    next_id,
)

ALL_PERMISSIONS = {"issues": "write", "pull_requests": "write", "contents": "write",
                   "checks": "write", "metadata": "read", "actions": "read",
                   "statuses": "read"}


def generate_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class Simulator:
    """The simulator's state and behaviour; ``app`` is its ASGI application."""

    def __init__(self, root: Path, webhook_url: str | None = None,
                 webhook_secret: str = "", private_key: str | None = None,
                 base_url: str = "http://127.0.0.1") -> None:
        self.world = World(root=root)
        self.spec = Spec()
        self.private_key = private_key or generate_private_key()
        self.public_key = serialization.load_pem_private_key(
            self.private_key.encode(), None).public_key()
        self.public_keys: dict[int, Any] = {self.world.app_id: self.public_key}
        self.webhook_url, self.webhook_secret = webhook_url, webhook_secret
        self.render = Renderer(self.spec, base_url)
        self.pending: set[asyncio.Task[None]] = set()
        self.oauth = WebFlow(self)
        self.attachments = Attachments(self)
        # Set while served by devkit.simulator.outage.served: refuse connections for N s.
        self.go_dark: Callable[[float], None] | None = None
        self.ci = ScriptedCI(self)  # another App's checks on pushed commits, as tests script
        self.app = Starlette(routes=self._routes())

    @property
    def base_url(self) -> str:
        return self.render.base

    @base_url.setter
    def base_url(self, value: str) -> None:
        self.render.base = value

    # --- set-up (also reachable over HTTP under /_sim) ---------------------------------------

    def add_installation(self, account: str, installation_id: int | None = None,
                         permissions: dict[str, str] | None = None) -> Installation:
        inst = Installation(installation_id or next_id(), account,
                            dict(permissions or ALL_PERMISSIONS))
        self.world.installations[inst.id] = inst
        return inst

    def add_repo(self, full_name: str, files: dict[str, str], installation_id: int | None = None,
                 default_branch: str = "main") -> Repo:
        return self._serve_repo(full_name, installation_id, default_branch,
                                lambda path: simgit.create_bare(path, files, default_branch))

    def import_repo(self, full_name: str, source: Path, default_branch: str = "main") -> Repo:
        """Serve an existing repository (cloned bare from ``source``) under ``full_name``."""
        def clone(path: Path) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            simgit.git("clone", "--bare", "-q", str(source), str(path))
            simgit.install_hooks(path)

        return self._serve_repo(full_name, None, default_branch, clone)

    def _serve_repo(self, full_name: str, installation_id: int | None, default_branch: str,
                    make_bare: Callable[[Path], object]) -> Repo:
        """Make the bare repository and serve it, under the owner's installation by default."""
        owner, name = full_name.split("/")
        if installation_id is None:
            found = [i for i in self.world.installations.values() if i.account == owner]
            installation_id = found[0].id if found else self.add_installation(owner).id
        path = self.world.root / owner / f"{name}.git"
        make_bare(path)
        repo = Repo(owner, name, installation_id, path, default_branch,
                    collaborators={owner: "admin"})
        self.world.repos[full_name.lower()] = repo
        return repo

    def person(self, login: str) -> User:
        """The one user of that name (the same id every time)."""
        return self.world.people.setdefault(login, User(login))

    def user_installations(self, login: str, client_id: str) -> list[Installation]:
        """The App's installations a person has explicit access to (their own account's, or
        one with a repository they collaborate on); another App's token sees none."""
        if client_id != self.world.client_id:
            return []
        mine = {r.installation_id for r in self.world.repos.values() if login in r.collaborators}
        return [i for i in self.world.installations.values()
                if i.account == login or i.id in mine]

    def user_repos(self, login: str, installation_id: int) -> list[tuple[Repo, str]]:
        """An installation's repositories a person has explicit access to, with their role."""
        return [(r, r.collaborators[login]) for r in self.world.repos.values()
                if r.installation_id == installation_id and login in r.collaborators]

    def get_repo(self, full_name: str) -> Repo:
        repo = self.world.repos.get(full_name.lower())
        if repo is None:
            raise GitHubError(404, "Not Found")
        return repo

    def add_fault(self, fault: Fault) -> None:
        self.world.faults.append(fault)

    def expire_tokens(self) -> None:
        for token in self.world.tokens.values():
            token.expires_at = time.time() - 1

    # --- user actions that GitHub would turn into webhooks ----------------------------------

    def open_issue(self, full_name: str, title: str, body: str, author: str,
                   labels: list[str] | None = None) -> Issue:
        repo = self.get_repo(full_name)
        issue = Issue(repo.next_number(), title, body, User(author), labels=list(labels or []))
        repo.issues[issue.number] = issue
        self.emit(repo, "issues", "opened", User(author), issue=self.render.issue(repo, issue))
        return issue

    def label_issue(self, full_name: str, number: int, label: str, actor: str,
                    actor_type: str = "User") -> None:
        repo, issue = self._issue(full_name, number)
        if label not in issue.labels:
            issue.labels.append(label)
        self.emit(repo, "issues", "labeled", User(actor, actor_type),
                  issue=self.render.issue(repo, issue), label=self.render.label(label))

    def unlabel_issue(self, full_name: str, number: int, label: str, actor: str) -> None:
        repo, issue = self._issue(full_name, number)
        if label in issue.labels:
            issue.labels.remove(label)
        self.emit(repo, "issues", "unlabeled", User(actor),
                  issue=self.render.issue(repo, issue), label=self.render.label(label))

    def edit_issue(self, full_name: str, number: int, actor: str, body: str) -> None:
        """Someone changes an issue's body; GitHub says who and what it was before."""
        repo, issue = self._issue(full_name, number)
        before, issue.body = issue.body, body
        self.emit(repo, "issues", "edited", User(actor), issue=self.render.issue(repo, issue),
                  changes={"body": {"from": before}})

    def close_issue(self, full_name: str, number: int, actor: str) -> None:
        """Someone closes an issue (its author may, with read access only)."""
        repo, issue = self._issue(full_name, number)
        issue.state = "closed"
        self.emit(repo, "issues", "closed", User(actor), issue=self.render.issue(repo, issue))

    def comment(self, full_name: str, number: int, body: str, actor: str,
                actor_type: str = "User") -> Comment:
        repo, issue = self._issue(full_name, number)
        user = User(actor, actor_type)
        comment = Comment(next_id(), body, user)
        issue.comments.append(comment)
        self.emit(repo, "issue_comment", "created", user, issue=self.render.issue(repo, issue),
                  comment=self.render.comment(repo, issue, comment))
        return comment

    def review(self, full_name: str, number: int, state: str, body: str, actor: str,
               comments: list[dict[str, Any]] | None = None) -> Review:
        repo, issue = self._issue(full_name, number)
        if issue.pull is None:
            raise GitHubError(404, "Not Found")
        user = User(actor)
        review = Review(next_id(), user, state, body)
        issue.pull.reviews.append(review)
        for c in comments or []:  # GitHub sends each inline comment as an event of its own
            self._review_comment(repo, issue, user, c["body"], c["path"], c.get("line"),
                                 None, review.id)
        self.emit(repo, "pull_request_review", "submitted", user,
                  review=self.render.review(repo, number, review),
                  pull_request=self.render.pull(repo, issue))
        return review

    def review_comment(self, full_name: str, number: int, body: str, actor: str,
                       path: str = "", line: int | None = None,
                       reply_to: int | None = None) -> ReviewComment:
        """A single comment on a line of a pull request, or a reply in a review thread: GitHub
        makes a comment-only review for it and sends both events."""
        repo, issue = self._issue(full_name, number)
        if issue.pull is None:
            raise GitHubError(404, "Not Found")
        user = User(actor)
        review = Review(next_id(), user, "commented", "")
        issue.pull.reviews.append(review)
        if reply_to is not None:
            parent = next(c for c in issue.pull.review_comments if c.id == reply_to)
            path, line = parent.path, parent.line
        comment = self._review_comment(repo, issue, user, body, path, line, reply_to,
                                       review.id)
        self.emit(repo, "pull_request_review", "submitted", user,
                  review=self.render.review(repo, number, review),
                  pull_request=self.render.pull(repo, issue))
        return comment

    def _review_comment(self, repo: Repo, issue: Issue, user: User, body: str, path: str,
                        line: int | None, reply_to: int | None, review_id: int | None
                        ) -> ReviewComment:
        """Add a review comment on the PR's head and send ``pull_request_review_comment``."""
        pull = issue.pull
        assert pull is not None
        comment = ReviewComment(
            next_id(), body, user, path, line, in_reply_to=reply_to, review_id=review_id,
            diff_hunk=simgit.diff_hunk(repo.path, pull.base, pull.head, path, line),
            commit_id=simgit.rev_parse(repo.path, pull.head) or "")
        pull.review_comments.append(comment)
        self.emit(repo, "pull_request_review_comment", "created", user,
                  comment=self.render.review_comment(repo, issue.number, comment),
                  pull_request=self.render.pull(repo, issue))
        return comment

    def rerun_check(self, full_name: str, check_id: int, actor: str) -> None:
        """Someone presses "Re-run" on a check run: GitHub tells the App that made it."""
        repo = self.get_repo(full_name)
        run = repo.check_runs[check_id]
        body = self.render.check_run(repo, run)
        body["app"].update(id=self.world.app_id, slug=self.world.app_slug)
        self.emit(repo, "check_run", "rerequested", User(actor), check_run=body)

    def push(self, full_name: str, branch: str, files: dict[str, str], message: str,
             author: str) -> str:
        repo = self.get_repo(full_name)
        before = simgit.rev_parse(repo.path, branch) or "0" * 40
        sha = simgit.commit_files(repo.path, branch, files, message,
                                  f"{author} <{author}@example.invalid>")
        self.ci.pushed(repo, branch, before, sha)
        return sha

    def _issue(self, full_name: str, number: int) -> tuple[Repo, Issue]:
        repo = self.get_repo(full_name)
        issue = repo.issues.get(number)
        if issue is None:
            raise GitHubError(404, "Not Found")
        return repo, issue

    # --- webhooks out ------------------------------------------------------------------------

    def emit(self, repo: Repo, event: str, action: str, sender: User, **parts: Any) -> Delivery:
        """Record a delivery and send it (in the background) as GitHub would."""
        payload = {"action": action, **parts, "repository": self.render.repo(repo),
                   "sender": self.render.user(sender),
                   "installation": {"id": repo.installation_id,
                                    "node_id": f"MDIz{repo.installation_id}"}}
        delivery = Delivery(next_id(), str(uuid.uuid4()), event, action,
                            json.dumps(payload).encode(), installation_id=repo.installation_id,
                            repository_id=repo.id)
        self.world.deliveries.append(delivery)
        self._send_later(delivery)
        return delivery

    def _send_later(self, delivery: Delivery) -> None:
        if not self.webhook_url:
            return
        try:
            task = asyncio.get_running_loop().create_task(self.send(delivery))
        except RuntimeError:
            return
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def send(self, delivery: Delivery, redelivery: bool = False) -> None:
        assert self.webhook_url
        signature = "sha256=" + hmac.new(self.webhook_secret.encode(), delivery.payload,
                                         hashlib.sha256).hexdigest()
        headers = {"content-type": "application/json", "user-agent": "GitHub-Hookshot/sim",
                   "x-github-event": delivery.event, "x-github-delivery": delivery.guid,
                   "x-hub-signature-256": signature,
                   "x-github-hook-installation-target-type": "integration"}
        start = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                resp = await client.post(self.webhook_url, content=delivery.payload,
                                         headers=headers)
            code, status = resp.status_code, "OK" if resp.is_success else f"{resp.status_code}"
        except httpx.HTTPError as exc:
            code, status = 0, f"failed to connect: {type(exc).__name__}"
        delivery.attempts.append({"status": status, "status_code": code,
                                  "redelivery": redelivery, "at": time.time(),
                                  "duration": time.monotonic() - start})

    async def settle(self) -> None:
        """Wait until every webhook sent so far has been answered."""
        while self.pending or self.ci.tasks:
            await asyncio.gather(*list(self.pending), *list(self.ci.tasks),
                                 return_exceptions=True)

    # --- auth --------------------------------------------------------------------------------

    def check_jwt(self, request: Request) -> int:
        """The id of the App whose JWT authenticates the request."""
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise GitHubError(401, "A JSON web token could not be decoded")
        try:
            issuer = jwt.decode(auth[7:], options={"verify_signature": False}).get("iss")
            key = self.public_keys.get(int(str(issuer)), self.public_key)
        except (jwt.PyJWTError, TypeError, ValueError):
            key = self.public_key
        try:
            claims = jwt.decode(auth[7:], key, algorithms=["RS256"],
                                options={"require": ["iat", "exp", "iss"]}, leeway=0)
        except jwt.ExpiredSignatureError as exc:
            raise GitHubError(401, "'Expiration time' claim ('exp') must be a numeric value "
                              "representing the future time at which the assertion expires"
                              ) from exc
        except jwt.PyJWTError as exc:
            raise GitHubError(401, f"A JSON web token could not be decoded: {exc}") from exc
        now = time.time()
        if claims["exp"] - claims["iat"] > 600 or claims["exp"] > now + 600:
            raise GitHubError(401, "'Expiration time' claim ('exp') is too far in the future")
        if claims["iat"] > now + 60:
            raise GitHubError(401, "'Issued at' claim ('iat') must be an Integer representing "
                              "the time that the assertion was issued")
        if str(claims["iss"]) not in {str(i) for i in self.public_keys}:
            raise GitHubError(401, "Integration not found")
        return int(claims["iss"])

    # --- registering Apps from manifests -----------------------------------------------------

    def register_app(self, manifest: dict[str, Any], owner: str) -> RegisteredApp:
        """What GitHub does when someone confirms a manifest: a new App, and a one-time code
        for its credentials."""
        name = str(manifest.get("name") or "").strip()
        hook = manifest.get("hook_attributes") or {}
        if not name or not manifest.get("url") or not isinstance(hook, dict):
            raise GitHubError(422, "Invalid manifest: name, url and hook_attributes are needed")
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "app"
        taken = {a.slug for a in self.world.apps.values()} | {self.world.app_slug}
        if slug in taken:
            raise GitHubError(422, f"Name {name!r} is already taken")
        pem = generate_private_key()
        app = RegisteredApp(next_id(), slug, name, owner, pem, secrets.token_hex(20),
                            f"Iv1.{secrets.token_hex(8)}", secrets.token_hex(20),
                            manifest, secrets.token_hex(10))
        self.world.apps[app.id] = app
        self.public_keys[app.id] = serialization.load_pem_private_key(
            pem.encode(), None).public_key()
        return app

    async def new_app_form(self, request: Request) -> Response:
        """``POST /settings/apps/new`` (and an organisation's): the browser's form post."""
        # A browser's form post (application/x-www-form-urlencoded).
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        owner = request.path_params.get("org") or "octo"
        try:
            data = json.loads((form.get("manifest") or [""])[0])
            if not isinstance(data, dict):
                raise ValueError("not an object")
            app = self.register_app(data, owner)
        except ValueError as exc:
            return Response(f"Invalid manifest: {exc}\n", status_code=422)
        except GitHubError as exc:
            return Response(f"{exc.message}\n", status_code=exc.status)
        query = {"code": app.code}
        if state := request.query_params.get("state"):
            query["state"] = state
        target = str(data.get("redirect_url") or f"{self.base_url}/apps/{app.slug}")
        return RedirectResponse(f"{target}?{urlencode(query)}", status_code=302)

    async def convert_manifest(self, request: Request, body: Any) -> tuple[int, Any]:
        """``POST /app-manifests/{code}/conversions``: the new App's credentials, once."""
        code = request.path_params["code"]
        app = next((a for a in self.world.apps.values()
                    if a.code == code and not a.converted
                    and a.created_at > time.time() - 3600), None)
        if app is None:
            raise GitHubError(404, "Not Found")
        app.converted = True
        manifest = app.manifest
        owner_type = "Organization" if app.owner != "octo" else "User"
        return 201, {
            "id": app.id, "slug": app.slug, "node_id": f"MDM6QXBw{app.id}",
            "owner": self.render.user(User(app.owner, owner_type)), "name": app.name,
            "description": manifest.get("description"), "external_url": manifest.get("url"),
            "html_url": f"{self.base_url}/apps/{app.slug}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(app.created_at)),
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(app.created_at)),
            "permissions": manifest.get("default_permissions") or {},
            "events": manifest.get("default_events") or [],
            "client_id": app.client_id, "client_secret": app.client_secret,
            "webhook_secret": app.webhook_secret, "pem": app.pem}

    def check_token(self, request: Request, repo: Repo, permission: str, level: str) -> Token:
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not value:
            raise GitHubError(401, "Requires authentication")
        return self.token_for(value.strip(), repo, permission, level)

    def token_for(self, value: str, repo: Repo, permission: str, level: str) -> Token:
        token = self.world.tokens.get(value)
        if token is None or token.expires_at <= time.time():
            raise GitHubError(401, "Bad credentials")
        if token.installation_id != repo.installation_id or (
                token.repositories is not None and repo.name not in token.repositories):
            raise GitHubError(404, "Not Found")
        inst = self.world.installations[token.installation_id]
        if inst.suspended:
            raise GitHubError(403, "This installation has been suspended")
        if not token.allows(repo, permission, level):
            raise GitHubError(403, "Resource not accessible by integration")
        if repo.archived and level == "write":
            raise GitHubError(403, "Repository was archived so is read-only.")
        return token

    # --- faults and rate-limit headers -------------------------------------------------------

    async def apply_fault(self, call: str = "") -> None:
        fault = next((f for f in self.world.faults if f.match in call), None)
        if fault is None:
            return
        fault.count -= 1
        if fault.count <= 0:
            self.world.faults.remove(fault)
        reset = str(int(time.time()) + fault.reset_in)
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
        elif fault.kind == "5xx":
            raise GitHubError(fault.status, "Server Error")
        elif fault.kind == "422":
            raise GitHubError(422, "Validation Failed", errors=[{
                "resource": "PullRequest", "code": "custom", "message": fault.message}])
        elif fault.kind == "secondary":
            raise GitHubError(403, "You have exceeded a secondary rate limit. Please wait a few "
                              "minutes before you try again.",
                              headers={"retry-after": str(fault.retry_after)})
        elif fault.kind == "429":
            raise GitHubError(429, "Too many requests",
                              headers={"retry-after": str(fault.retry_after)})
        elif fault.kind == "primary":
            raise GitHubError(403, "API rate limit exceeded for installation.", headers={
                "x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
                "x-ratelimit-used": "5000", "x-ratelimit-reset": reset,
                "x-ratelimit-resource": "core"})

    def rate_headers(self) -> dict[str, str]:
        self.world.rate_remaining = max(0, self.world.rate_remaining - 1)
        return {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(
            self.world.rate_remaining), "x-ratelimit-used": str(5000 - self.world.rate_remaining),
                "x-ratelimit-reset": str(int(time.time()) + 3600),
                "x-ratelimit-resource": "core", "x-github-api-version-selected": "2022-11-28"}

    # --- routing -----------------------------------------------------------------------------

    def _routes(self) -> list[Route]:

        convert = self.endpoint(self.convert_manifest)
        return [*control.routes(self), *self.ci.routes(), *rest.routes(self), *self.oauth.routes(),
                *self.attachments.routes(),
                Route("/settings/apps/new", self.new_app_form, methods=["POST"]),
                Route("/organizations/{org}/settings/apps/new", self.new_app_form,
                      methods=["POST"]),
                Route("/app-manifests/{code}/conversions", convert, methods=["POST"]),
                Route("/api/v3/app-manifests/{code}/conversions", convert, methods=["POST"]),
                Route("/{owner}/{name}.git/{rest:path}", self.git_http, methods=["GET", "POST"])]

    def endpoint(self, handler: Callable[[Request, Any], Awaitable[tuple[int, Any]]]
                 ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a REST handler: faults, validation against the OpenAPI subset, call log."""

        async def run(request: Request) -> Response:
            path = request.url.path.removeprefix("/api/v3")
            op = self.spec.find(request.method, path)
            record: dict[str, Any] = {"method": request.method, "path": path,
                                      "operation": op.operation_id if op else None,
                                      "at": time.time()}
            self.world.calls.append(record)
            try:
                await self.apply_fault(f"{request.method} {path}")
                body = await self._json_body(request, op)
                status, out = await handler(request, body)
            except GitHubError as exc:
                record["status"] = exc.status
                return exc.response()
            record["status"] = status
            if isinstance(out, Response):  # a redirect (a log download), as GitHub answers
                return out
            if op is not None:
                record["response_errors"] = self.spec.response_errors(op, status, out)
            headers = self.rate_headers()
            if link := getattr(request.state, "link", None):
                headers["link"] = link
            if status == 204:
                return Response(status_code=204, headers=headers)
            return JSONResponse(out, status_code=status, headers=headers)

        return run

    async def _json_body(self, request: Request, op: Operation | None) -> Any:
        raw = await request.body()
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise GitHubError(400, "Problems parsing JSON") from exc
        if op is not None:
            errors = self.spec.request_errors(op, body)
            if errors:
                raise GitHubError(422, "Invalid request.", errors=[
                    {"resource": op.operation_id, "code": "invalid", "message": e}
                    for e in errors])
        return body

    # --- git smart HTTP ----------------------------------------------------------------------

    async def git_http(self, request: Request) -> Response:
        owner, name = request.path_params["owner"], request.path_params["name"]
        rest = request.path_params["rest"]
        repo = self.world.repo(owner, name)
        if repo is None:
            return Response("Repository not found.\n", status_code=404)
        service = request.query_params.get("service", "") or rest.rsplit("/", 1)[-1]
        writing = service == "git-receive-pack"
        auth = request.headers.get("authorization", "")
        challenge = {"www-authenticate": 'Basic realm="GitHub"'}
        if not auth.lower().startswith("basic "):
            return Response("Authentication required\n", status_code=401, headers=challenge)
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            token = self.token_for(password, repo, "contents", "write" if writing else "read")
        except (GitHubError, ValueError):
            return Response("Invalid username or token.\n", status_code=401, headers=challenge)
        extra = {"HANDOFF_SIM_WORKFLOWS": token.permissions.get("workflows", "")}
        before = simgit.branch_heads(repo.path) if writing and request.method == "POST" else {}
        status, headers, body = await simgit.http_backend(
            self.world.root, f"/{repo.owner}/{repo.name}.git/{rest}", request.method,
            request.url.query, request.headers.get("content-type", ""), await request.body(),
            user, extra, request.headers.get("content-encoding", ""))
        if writing and request.method == "POST":
            for branch, sha in simgit.branch_heads(repo.path).items():
                if before.get(branch) != sha:
                    self.ci.pushed(repo, branch, before.get(branch, "0" * 40), sha)
        return Response(body, status_code=status, headers=headers)

    # --- token minting -----------------------------------------------------------------------

    def mint_token(self, inst: Installation, repositories: list[str] | None,
                   permissions: dict[str, str] | None) -> Token:
        granted = dict(inst.permissions)
        if permissions:
            for key, level in permissions.items():
                have = granted.get(key)
                if have is None or (have == "read" and level == "write"):
                    raise GitHubError(422, f"The permissions requested are not granted to this "
                                      f"installation: {key}={level}")
            granted = dict(permissions)
        if repositories:
            known = {r.name for r in self.world.repos.values()
                     if r.installation_id == inst.id}
            missing = [r for r in repositories if r not in known]
            if missing:
                raise GitHubError(422, f"There is at least one repository that does not exist "
                                  f"or is not accessible to the parent installation: {missing}")
        token = Token(f"ghs_{secrets.token_urlsafe(27)}", inst.id, repositories, granted,
                      time.time() + 3600)
        self.world.tokens[token.token] = token
        return token
