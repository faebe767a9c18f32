"""The simulator's REST endpoints: the calls Handoff makes, as GitHub answers them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.routing import Route

from devkit.simulator import git as simgit
from devkit.simulator.state import (
    CheckRun,
    Comment,
    GitHubError,
    Issue,
    Pull,
    Repo,
    ReviewComment,
    User,
    next_id,
)

if TYPE_CHECKING:
    from devkit.simulator.app import Simulator

T = TypeVar("T")
Result = tuple[int, Any]
Handler = Callable[[Request, Any], Awaitable[Result]]
RepoHandler = Callable[[Request, Any, Repo], Awaitable[Result]]


def routes(sim: Simulator) -> list[Route]:
    r = sim.render

    def repo_of(request: Request) -> Repo:
        return sim.get_repo(f"{request.path_params['owner']}/{request.path_params['repo']}")

    def issue_of(request: Request, repo: Repo) -> Issue:
        issue = repo.issues.get(int(request.path_params["number"]))
        if issue is None:
            raise GitHubError(404, "Not Found")
        return issue

    def pull_of(request: Request, repo: Repo) -> Issue:
        issue = issue_of(request, repo)
        if issue.pull is None:
            raise GitHubError(404, "Not Found")
        return issue

    def bot(request: Request) -> User:
        return User(f"{sim.world.app_slug}[bot]", "Bot", id=sim.world.app_id)

    def authed(permission: str, level: str = "read") -> Callable[[RepoHandler], Handler]:
        def wrap(fn: RepoHandler) -> Handler:
            async def handler(request: Request, body: Any) -> Result:
                repo = repo_of(request)
                sim.check_token(request, repo, permission, level)
                return await fn(request, body, repo)
            return handler
        return wrap

    # --- app endpoints (JWT) ---
    async def get_app(request: Request, body: Any) -> Result:
        app_id = sim.check_jwt(request)
        out = sim.spec.example("integration")
        out.update(id=sim.world.app_id, slug=sim.world.app_slug, name="Handoff")
        if made := sim.world.apps.get(app_id):  # one registered from a manifest
            out.update(id=made.id, slug=made.slug, name=made.name, client_id=made.client_id,
                       owner=sim.render.user(User(made.owner)))
        return 200, out

    async def get_installation(request: Request, body: Any) -> Result:
        sim.check_jwt(request)
        inst = sim.world.installations.get(int(request.path_params["id"]))
        if inst is None:
            raise GitHubError(404, "Not Found")
        return 200, _installation(sim, inst.id)

    async def create_token(request: Request, body: Any) -> Result:
        sim.check_jwt(request)
        inst = sim.world.installations.get(int(request.path_params["id"]))
        if inst is None:
            raise GitHubError(404, "Not Found")
        if inst.suspended:
            raise GitHubError(403, "This installation has been suspended")
        body = body or {}
        token = sim.mint_token(inst, body.get("repositories"), body.get("permissions"))
        out = sim.spec.example("installation-token")
        out.update(token=token.token, permissions=token.permissions,
                   expires_at=datetime.fromtimestamp(token.expires_at, UTC)
                   .strftime("%Y-%m-%dT%H:%M:%SZ"),
                   repository_selection="selected" if token.repositories else "all")
        out.pop("repositories", None)
        return 201, out

    async def repo_installation(request: Request, body: Any) -> Result:
        sim.check_jwt(request)
        return 200, _installation(sim, repo_of(request).installation_id)

    # --- repository ---
    @authed("metadata")
    async def get_repo(request: Request, body: Any, repo: Repo) -> Result:
        return 200, r.repo(repo)

    @authed("contents")
    async def get_branch(request: Request, body: Any, repo: Repo) -> Result:
        name = request.path_params["branch"]
        sha = simgit.rev_parse(repo.path, name)
        if sha is None:
            raise GitHubError(404, "Branch not found")
        out = sim.spec.example("branch-get")
        required = sim.ci.required.get((repo.full_name.lower(), name))
        out.update(name=name, protected=required is not None)
        if required is not None:  # what a reader sees of branch protection
            out["protection"] = {"enabled": True, "required_status_checks": {
                "enforcement_level": "non_admins", "contexts": required,
                "checks": [{"context": c, "app_id": None} for c in required]}}
        out["commit"]["sha"] = sha
        return 200, out

    @authed("contents")
    async def get_ref(request: Request, body: Any, repo: Repo) -> Result:
        ref = request.path_params["ref"]
        sha = simgit.rev_parse(repo.path, ref.removeprefix("heads/"))
        if sha is None:
            raise GitHubError(404, "Not Found")
        out = sim.spec.example("git-ref")
        out.update(ref=f"refs/{ref}")
        out["object"].update(sha=sha, type="commit")
        return 200, out

    @authed("contents", "write")
    async def create_ref(request: Request, body: Any, repo: Repo) -> Result:
        ref = str(body["ref"])
        if not ref.startswith("refs/heads/"):
            raise GitHubError(422, "Reference name must start with 'refs/'")
        branch = ref.removeprefix("refs/heads/")
        if simgit.rev_parse(repo.path, branch):
            raise GitHubError(422, "Reference already exists")
        try:
            simgit.git("update-ref", ref, body["sha"], cwd=repo.path)
        except RuntimeError as exc:
            raise GitHubError(422, "Object does not exist") from exc
        out = sim.spec.example("git-ref")
        out.update(ref=ref)
        out["object"].update(sha=body["sha"], type="commit")
        return 201, out

    @authed("contents")
    async def get_content(request: Request, body: Any, repo: Repo) -> Result:
        path = request.path_params["path"]
        ref = request.query_params.get("ref", repo.default_branch)
        try:
            blob = simgit.git("show", f"{ref}:{path}", cwd=repo.path)
        except RuntimeError as exc:
            raise GitHubError(404, "Not Found") from exc
        import base64
        out = sim.spec.example("content-file-response-if-content-is-a-file")
        out.update(path=path, name=path.rsplit("/", 1)[-1], size=len(blob.encode()),
                   content=base64.b64encode(blob.encode()).decode(), encoding="base64")
        return 200, out

    @authed("metadata")
    async def permission(request: Request, body: Any, repo: Repo) -> Result:
        login = request.path_params["username"]
        level = repo.collaborators.get(login)
        if level is None:
            level = "read" if not repo.private else None
        if level is None:
            raise GitHubError(404, "Not Found")
        legacy = {"maintain": "write", "triage": "read"}.get(level, level)
        out = sim.spec.example("repository-collaborator-permission-response-if-user-has-admin-"
                               "permissions")
        out.update(permission=legacy, role_name=level)
        out["user"] = {**r.user(User(login)), "role_name": level}
        return 200, out

    # --- issues and comments ---
    @authed("issues")
    async def get_issue(request: Request, body: Any, repo: Repo) -> Result:
        return 200, r.issue(repo, issue_of(request, repo))

    @authed("issues")
    async def list_comments(request: Request, body: Any, repo: Repo) -> Result:
        issue = issue_of(request, repo)
        return 200, [r.comment(repo, issue, c) for c in paged(request, issue.comments)]

    @authed("issues", "write")
    async def create_comment(request: Request, body: Any, repo: Repo) -> Result:
        issue = issue_of(request, repo)
        if len(body["body"]) > 65536:
            raise GitHubError(422, "Validation Failed", errors=[{
                "resource": "IssueComment", "code": "custom", "field": "body",
                "message": "body is too long (maximum is 65536 characters)"}])
        comment = Comment(next_id(), body["body"], bot(request))
        issue.comments.append(comment)
        return 201, r.comment(repo, issue, comment)

    def find_comment(repo: Repo, comment_id: int) -> tuple[Issue, Comment]:
        for issue in repo.issues.values():
            for c in issue.comments:
                if c.id == comment_id:
                    return issue, c
        raise GitHubError(404, "Not Found")

    @authed("issues", "write")
    async def update_comment(request: Request, body: Any, repo: Repo) -> Result:
        issue, comment = find_comment(repo, int(request.path_params["id"]))
        if len(body["body"]) > 65536:
            raise GitHubError(422, "Validation Failed", errors=[{
                "resource": "IssueComment", "code": "custom", "field": "body",
                "message": "body is too long (maximum is 65536 characters)"}])
        comment.history.append(comment.body)
        comment.body, comment.updated_at = body["body"], time.time()
        return 200, r.comment(repo, issue, comment)

    @authed("issues", "write")
    async def comment_reaction(request: Request, body: Any, repo: Repo) -> Result:
        _, comment = find_comment(repo, int(request.path_params["id"]))
        user = bot(request)
        comment.reactions.append((user.login, body["content"]))
        return 201, r.reaction(user, body["content"])

    @authed("issues", "write")
    async def issue_reaction(request: Request, body: Any, repo: Repo) -> Result:
        issue = issue_of(request, repo)
        user = bot(request)
        if (user.login, body["content"]) in issue.reactions:
            return 200, r.reaction(user, body["content"])
        issue.reactions.append((user.login, body["content"]))
        return 201, r.reaction(user, body["content"])

    @authed("issues", "write")
    async def add_labels(request: Request, body: Any, repo: Repo) -> Result:
        issue = issue_of(request, repo)
        names = body.get("labels", []) if isinstance(body, dict) else body or []
        for name in names:
            if name not in issue.labels:
                issue.labels.append(name)
        return 200, [r.label(n) for n in issue.labels]

    @authed("issues", "write")
    async def remove_label(request: Request, body: Any, repo: Repo) -> Result:
        issue = issue_of(request, repo)
        name = request.path_params["name"]
        if name not in issue.labels:
            raise GitHubError(404, "Label does not exist")
        issue.labels.remove(name)
        return 200, [r.label(n) for n in issue.labels]

    @authed("issues", "write")
    async def remove_all_labels(request: Request, body: Any, repo: Repo) -> Result:
        issue_of(request, repo).labels.clear()
        return 204, None

    # --- pull requests ---
    @authed("pull_requests")
    async def list_pulls(request: Request, body: Any, repo: Repo) -> Result:
        head = request.query_params.get("head", "")
        state = request.query_params.get("state", "open")
        out = []
        for issue in repo.issues.values():
            if issue.pull is None or (state != "all" and issue.state != state):
                continue
            if head and head.split(":")[-1] != issue.pull.head:
                continue
            out.append(issue)
        return 200, [r.pull(repo, issue) for issue in paged(request, out)]

    @authed("pull_requests", "write")
    async def create_pull(request: Request, body: Any, repo: Repo) -> Result:
        head = str(body["head"]).split(":")[-1]
        if simgit.rev_parse(repo.path, head) is None:
            raise GitHubError(422, "Validation Failed", errors=[{
                "resource": "PullRequest", "field": "head", "code": "invalid"}])
        for issue in repo.issues.values():
            if issue.pull and issue.pull.head == head and issue.state == "open":
                raise GitHubError(422, "Validation Failed", errors=[{
                    "resource": "PullRequest", "code": "custom",
                    "message": f"A pull request already exists for {repo.owner}:{head}."}])
        if not simgit.git("rev-list", f"{body['base']}..{head}", cwd=repo.path).strip():
            raise GitHubError(422, "Validation Failed", errors=[{
                "resource": "PullRequest", "code": "custom",
                "message": f"No commits between {body['base']} and {head}"}])
        issue = Issue(repo.next_number(), body.get("title") or head, body.get("body") or "",
                      bot(request), pull=Pull(head, body["base"], bool(body.get("draft"))))
        repo.issues[issue.number] = issue
        return 201, r.pull(repo, issue)

    @authed("pull_requests")
    async def get_pull(request: Request, body: Any, repo: Repo) -> Result:
        return 200, r.pull(repo, pull_of(request, repo))

    @authed("pull_requests", "write")
    async def update_pull(request: Request, body: Any, repo: Repo) -> Result:
        issue = pull_of(request, repo)
        body = body or {}
        issue.title = body.get("title", issue.title)
        issue.body = body.get("body", issue.body)
        issue.state = body.get("state", issue.state)
        return 200, r.pull(repo, issue)

    @authed("pull_requests")
    async def pull_files(request: Request, body: Any, repo: Repo) -> Result:
        issue = pull_of(request, repo)
        assert issue.pull
        files = simgit.diff_files(repo.path, issue.pull.base, issue.pull.head)
        example = sim.spec.example("diff-entry-items")[0]
        return 200, [{**example, **f} for f in files]

    @authed("pull_requests")
    async def pull_reviews(request: Request, body: Any, repo: Repo) -> Result:
        issue = pull_of(request, repo)
        assert issue.pull
        return 200, [r.review(repo, issue.number, rv) for rv in paged(request, issue.pull.reviews)]

    @authed("pull_requests")
    async def pull_comments(request: Request, body: Any, repo: Repo) -> Result:
        issue = pull_of(request, repo)
        assert issue.pull
        return 200, [r.review_comment(repo, issue.number, c)
                     for c in paged(request, issue.pull.review_comments)]

    @authed("pull_requests", "write")
    async def reply_comment(request: Request, body: Any, repo: Repo) -> Result:
        issue = pull_of(request, repo)
        assert issue.pull
        parent_id = int(request.path_params["id"])
        parent = next((c for c in issue.pull.review_comments if c.id == parent_id), None)
        if parent is None or not body or not body.get("body"):
            raise GitHubError(404 if parent is None else 422, "Not Found")
        reply = ReviewComment(next_id(), body["body"], bot(request), parent.path, parent.line,
                              in_reply_to=parent_id, diff_hunk=parent.diff_hunk,
                              commit_id=parent.commit_id)
        issue.pull.review_comments.append(reply)
        rendered = r.review_comment(repo, issue.number, reply)
        sim.emit(repo, "pull_request_review_comment", "created", reply.user, comment=rendered,
                 pull_request=r.pull(repo, issue))
        return 201, rendered

    @authed("pull_requests", "write")
    async def review_comment_reaction(request: Request, body: Any, repo: Repo) -> Result:
        comment_id = int(request.path_params["id"])
        found = next((c for i in repo.issues.values() if i.pull
                      for c in i.pull.review_comments if c.id == comment_id), None)
        if found is None:
            raise GitHubError(404, "Not Found")
        user = bot(request)
        if (user.login, body["content"]) in found.reactions:
            return 200, r.reaction(user, body["content"])
        found.reactions.append((user.login, body["content"]))
        return 201, r.reaction(user, body["content"])

    # --- checks ---
    @authed("checks", "write")
    async def create_check(request: Request, body: Any, repo: Repo) -> Result:
        run = CheckRun(next_id(), body["name"], body["head_sha"], body.get("status", "queued"),
                       body.get("conclusion"), body.get("output") or {}, body.get("details_url"),
                       body.get("external_id"))
        if run.conclusion:
            run.status = "completed"
        repo.check_runs[run.id] = run
        return 201, r.check_run(repo, run)

    @authed("checks", "write")
    async def update_check(request: Request, body: Any, repo: Repo) -> Result:
        run = repo.check_runs.get(int(request.path_params["id"]))
        if run is None:
            raise GitHubError(404, "Not Found")
        for key in ("name", "status", "conclusion", "details_url", "external_id"):
            if key in body:
                setattr(run, key, body[key])
        if body.get("output"):
            run.output = body["output"]
        if run.conclusion:
            run.status = "completed"
        return 200, r.check_run(repo, run)

    # --- the person a user access token acts for ---
    async def get_user(request: Request, body: Any) -> Result:
        return 200, r.private_user(sim.person(sim.oauth.user_token(request).login))

    async def user_installations(request: Request, body: Any) -> Result:
        token = sim.oauth.user_token(request)
        found = sim.user_installations(token.login, token.client_id)
        return 200, {"total_count": len(found),
                     "installations": [_installation(sim, i.id) for i in paged(request, found)]}

    async def user_installation_repos(request: Request, body: Any) -> Result:
        token = sim.oauth.user_token(request)
        installation_id = str(request.path_params["id"])
        if installation_id not in {str(i.id) for i in sim.user_installations(
                token.login, token.client_id)}:
            raise GitHubError(404, "Not Found")
        found = sim.user_repos(token.login, int(installation_id))
        return 200, {"total_count": len(found), "repository_selection": "all",
                     "repositories": [{**r.repo(repo), "permissions": _role_permissions(role)}
                                      for repo, role in paged(request, found)]}

    # --- webhook deliveries (JWT) ---
    async def list_deliveries(request: Request, body: Any) -> Result:
        sim.check_jwt(request)
        out = []
        for d in reversed(sim.world.deliveries):
            for n, attempt in enumerate(d.attempts or [{
                    "status": "pending", "status_code": 0, "redelivery": False,
                    "at": time.time(), "duration": 0}]):
                out.append({"cursor": f"v1_{d.id}_{n}", "id": d.id, "guid": d.guid,
                            "delivered_at": _iso(attempt["at"]),
                            "redelivery": attempt["redelivery"],
                            "duration": attempt["duration"], "status": attempt["status"],
                            "status_code": attempt["status_code"], "event": d.event,
                            "action": d.action, "installation_id": d.installation_id,
                            "repository_id": d.repository_id})
        status = request.query_params.get("status")
        if status == "failure":
            out = [o for o in out if o["status"] != "OK"]
        # Cursor paging as GitHub does it: an opaque cursor, found only in the Link header.
        per_page = per_page_of(request)
        start = 0
        if cursor := request.query_params.get("cursor"):
            start = next((i + 1 for i, o in enumerate(out) if o["cursor"] == cursor), len(out))
        chunk = out[start:start + per_page]
        if start + per_page < len(out):
            link_next(request, cursor=chunk[-1]["cursor"])
        return 200, [{k: v for k, v in o.items() if k != "cursor"} for o in chunk]

    async def redeliver(request: Request, body: Any) -> Result:
        sim.check_jwt(request)
        delivery_id = int(request.path_params["id"])
        delivery = next((d for d in sim.world.deliveries if d.id == delivery_id), None)
        if delivery is None:
            raise GitHubError(404, "Not Found")
        await sim.send(delivery, redelivery=True)
        return 202, {}

    table: list[tuple[str, str, Any]] = [
        ("GET", "/app", get_app),
        ("GET", "/app/installations/{id}", get_installation),
        ("POST", "/app/installations/{id}/access_tokens", create_token),
        ("GET", "/app/hook/deliveries", list_deliveries),
        ("POST", "/app/hook/deliveries/{id}/attempts", redeliver),
        ("GET", "/repos/{owner}/{repo}/installation", repo_installation),
        ("GET", "/user", get_user),
        ("GET", "/user/installations", user_installations),
        ("GET", "/user/installations/{id}/repositories", user_installation_repos),
        ("GET", "/repos/{owner}/{repo}", get_repo),
        ("GET", "/repos/{owner}/{repo}/branches/{branch:path}", get_branch),
        ("GET", "/repos/{owner}/{repo}/git/ref/{ref:path}", get_ref),
        ("POST", "/repos/{owner}/{repo}/git/refs", create_ref),
        ("GET", "/repos/{owner}/{repo}/contents/{path:path}", get_content),
        ("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission", permission),
        ("GET", "/repos/{owner}/{repo}/issues/{number:int}", get_issue),
        ("GET", "/repos/{owner}/{repo}/issues/{number:int}/comments", list_comments),
        ("POST", "/repos/{owner}/{repo}/issues/{number:int}/comments", create_comment),
        ("PATCH", "/repos/{owner}/{repo}/issues/comments/{id:int}", update_comment),
        ("POST", "/repos/{owner}/{repo}/issues/comments/{id:int}/reactions", comment_reaction),
        ("POST", "/repos/{owner}/{repo}/issues/{number:int}/reactions", issue_reaction),
        ("POST", "/repos/{owner}/{repo}/issues/{number:int}/labels", add_labels),
        ("DELETE", "/repos/{owner}/{repo}/issues/{number:int}/labels/{name}", remove_label),
        ("DELETE", "/repos/{owner}/{repo}/issues/{number:int}/labels", remove_all_labels),
        ("GET", "/repos/{owner}/{repo}/pulls", list_pulls),
        ("POST", "/repos/{owner}/{repo}/pulls", create_pull),
        ("GET", "/repos/{owner}/{repo}/pulls/{number:int}", get_pull),
        ("PATCH", "/repos/{owner}/{repo}/pulls/{number:int}", update_pull),
        ("GET", "/repos/{owner}/{repo}/pulls/{number:int}/files", pull_files),
        ("GET", "/repos/{owner}/{repo}/pulls/{number:int}/reviews", pull_reviews),
        ("GET", "/repos/{owner}/{repo}/pulls/{number:int}/comments", pull_comments),
        ("POST", "/repos/{owner}/{repo}/pulls/{number:int}/comments/{id:int}/replies",
         reply_comment),
        ("POST", "/repos/{owner}/{repo}/pulls/comments/{id:int}/reactions",
         review_comment_reaction),
        ("POST", "/repos/{owner}/{repo}/check-runs", create_check),
        ("PATCH", "/repos/{owner}/{repo}/check-runs/{id:int}", update_check),
    ]
    out = []
    for method, path, fn in table:
        wrapped = sim.endpoint(fn)
        out.append(Route(path, wrapped, methods=[method]))
        out.append(Route("/api/v3" + path, wrapped, methods=[method]))  # GHES layout
    return out


def per_page_of(request: Request) -> int:
    """GitHub's ``per_page``: 30 unless asked, at most 100."""
    try:
        return max(1, min(100, int(request.query_params.get("per_page", 30))))
    except ValueError:
        return 30


def link_next(request: Request, **changes: Any) -> None:
    """Name the next page in a ``Link`` header (the endpoint wrapper sends it)."""
    query = {**request.query_params, **{k: str(v) for k, v in changes.items()}}
    request.state.link = f'<{request.url.replace(query=urlencode(query))}>; rel="next"'


def paged(request: Request, items: list[T]) -> list[T]:
    """One page of a list, as GitHub pages: ``page``/``per_page`` and a ``Link`` header."""
    per_page = per_page_of(request)
    try:
        page = max(1, int(request.query_params.get("page", 1)))
    except ValueError:
        page = 1
    if page * per_page < len(items):
        link_next(request, page=page + 1)
    return items[(page - 1) * per_page: page * per_page]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


ROLES = ("read", "triage", "write", "maintain", "admin")
ROLE_KEYS = ("pull", "triage", "push", "maintain", "admin")


def _role_permissions(role: str) -> dict[str, bool]:
    """A repository's ``permissions`` for a person with this role (read ... admin)."""
    rank = ROLES.index(role) if role in ROLES else 0
    return {key: rank >= n for n, key in enumerate(ROLE_KEYS)}


def _installation(sim: Simulator, installation_id: int) -> dict[str, Any]:
    inst = sim.world.installations[installation_id]
    out = sim.spec.example("installation")
    out.update(id=inst.id, app_id=sim.world.app_id, permissions=inst.permissions,
               suspended_at=None, suspended_by=None)
    out["account"] = sim.render.user(User(inst.account, "Organization"))
    return dict(out)
