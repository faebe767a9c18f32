"""The simulator's control API (``/_sim/...``): what a person does on GitHub, faults and
outages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devkit.simulator.state import Fault, GitHubError

if TYPE_CHECKING:
    from devkit.simulator.app import Simulator


def routes(sim: Simulator) -> list[Route]:
    def action(fn: Callable[[dict[str, Any]], Any]) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def run(request: Request) -> JSONResponse:
            try:
                body = await request.json()
                result = fn(body)
            except GitHubError as exc:
                return exc.response()
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"message": f"bad control request: {exc!r}"}, 400)
            return JSONResponse(result if isinstance(result, dict) else {"ok": True}, 201)
        return run

    def add_repo(b: dict[str, Any]) -> dict[str, Any]:
        repo = sim.add_repo(b["full_name"], b.get("files", {"README.md": "# repo\n"}),
                            b.get("installation_id"), b.get("default_branch", "main"))
        for login, level in b.get("collaborators", {}).items():
            repo.collaborators[login] = level
        return {"full_name": repo.full_name, "installation_id": repo.installation_id,
                "clone_url": sim.render.repo(repo)["clone_url"]}

    def open_issue(b: dict[str, Any]) -> dict[str, Any]:
        issue = sim.open_issue(b["repo"], b["title"], b.get("body", ""), b["user"],
                               b.get("labels"))
        return {"number": issue.number}

    def oauth_app(b: dict[str, Any]) -> dict[str, Any]:
        """The App's callback URLs (where its sign-in may come back); its client id and
        secret, for HANDOFF_CLIENT_ID and HANDOFF_CLIENT_SECRET."""
        sim.world.callback_urls = [str(u) for u in b["callback_urls"]]
        return {"client_id": sim.world.client_id, "client_secret": sim.world.client_secret,
                "callback_urls": sim.world.callback_urls}

    def fault(b: dict[str, Any]) -> dict[str, Any]:
        sim.add_fault(Fault(**b))
        return {"pending": len(sim.world.faults)}

    async def clear_faults(request: Request) -> JSONResponse:
        cleared = len(sim.world.faults)
        sim.world.faults.clear()
        return JSONResponse({"cleared": cleared})

    def outage(b: dict[str, Any]) -> dict[str, Any]:
        """GitHub unreachable: connections refused for ``seconds``, then served again."""
        if sim.go_dark is None:
            raise ValueError("this simulator is not served with outages (outage.served)")
        sim.go_dark(float(b["seconds"]))
        return {"dark_for": float(b["seconds"])}

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({
            "repos": {name: {"issues": {n: {"title": i.title, "body": i.body,
                                            "state": i.state,
                                            "labels": i.labels,
                                            "comments": [c.body for c in i.comments],
                                            "edits": [b for c in i.comments for b in c.history],
                                            "pull": i.pull.head if i.pull else None}
                                        for n, i in repo.issues.items()}}
                      for name, repo in sim.world.repos.items()},
            "calls": [[c["method"], c["path"], c.get("status")] for c in sim.world.calls],
            "deliveries": [{"guid": d.guid, "event": d.event, "action": d.action,
                            "status": d.status} for d in sim.world.deliveries]})

    return [
        Route("/_sim/repos", action(add_repo), methods=["POST"]),
        Route("/_sim/issues", action(open_issue), methods=["POST"]),
        Route("/_sim/label", action(lambda b: sim.label_issue(
            b["repo"], b["number"], b["label"], b["actor"])), methods=["POST"]),
        Route("/_sim/unlabel", action(lambda b: sim.unlabel_issue(
            b["repo"], b["number"], b["label"], b["actor"])), methods=["POST"]),
        Route("/_sim/comment", action(lambda b: {"id": sim.comment(
            b["repo"], b["number"], b["body"], b["actor"], b.get("actor_type", "User")).id}),
            methods=["POST"]),
        Route("/_sim/review", action(lambda b: {"id": sim.review(
            b["repo"], b["number"], b["state"], b.get("body", ""), b["actor"],
            b.get("comments")).id}), methods=["POST"]),
        Route("/_sim/faults", action(fault), methods=["POST"]),
        Route("/_sim/oauth-app", action(oauth_app), methods=["POST"]),
        Route("/_sim/faults", clear_faults, methods=["DELETE"]),
        Route("/_sim/outage", action(outage), methods=["POST"]),
        Route("/_sim/expire-tokens", action(lambda b: sim.expire_tokens()), methods=["POST"]),
        Route("/_sim/state", state, methods=["GET"]),
    ]
