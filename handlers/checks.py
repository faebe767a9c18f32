"""``check_suite``, ``check_run``, ``workflow_run`` and ``status`` events: a check of another App
failing on an agent branch starts a ``ci-fix`` iteration.

Whether it acts is settled from what Handoff stored (bot/receiver/ci_gate.py: the commit is the
one Handoff pushed, no job under way, not looked at before) and then by the job itself, which
reads every check of the commit through the API (bot/executor/ci.py). Handoff's own check runs
never start one.
"""

from __future__ import annotations

import re
from typing import Any

from bot.github.naming import AGENT_BRANCH_PREFIX, FAILED, STATUS_FAILED
from handlers.router import Context, Router
from handlers.vocabulary import CI_FIX, Decision, Event, Ignore, StartJob

router = Router()

ISSUE_OF_BRANCH = re.compile(re.escape(AGENT_BRANCH_PREFIX) + r"(\d+)(?:-|$)")


def app_slug(ctx: Context) -> str:
    """The App's own slug, from its bot login (``handoff[bot]`` -> ``handoff``)."""
    return ctx.bot_login.removesuffix("[bot]")


def issue_of(branch: str) -> int | None:
    """The issue an agent branch works on (``agent/issue-12-slug`` -> 12)."""
    match = ISSUE_OF_BRANCH.match(branch or "")
    return int(match.group(1)) if match else None


def _pr(pulls: Any) -> int | None:
    """The pull request a check payload names (GitHub lists those whose head it ran on)."""
    for pull in pulls if isinstance(pulls, list) else []:
        if isinstance(pull, dict) and isinstance(pull.get("number"), int):
            return int(pull["number"])
    return None


def failed(event: Event, ctx: Context, *, name: str, branch: str, sha: str, conclusion: str,
           app: str, pulls: Any) -> Decision:
    """The decision for one failed (or not) check of some App on a commit of some branch."""
    if app == app_slug(ctx):
        return Ignore("Handoff's own check")
    if conclusion not in FAILED:
        return Ignore(f"{name!r} ended {conclusion or 'without a conclusion'}; nothing failed")
    number = issue_of(branch)
    if number is None:
        return Ignore(f"{branch!r} is not an agent branch")
    return StartJob(
        kind=CI_FIX, repo=event.repo, installation_id=event.installation_id,
        issue_number=number, pr_number=_pr(pulls), requested_by=event.sender, trigger="ci",
        context={"head_sha": sha, "check": name[:200], "ci_event": event.name},
    )


@router.register("check_run", "completed",
                 reads={"check_run.name": str, "check_run.head_sha": str,
                        "repository.full_name": str})
def check_run(event: Event, ctx: Context) -> Decision:
    run = event.payload["check_run"]
    suite = run.get("check_suite") or {}
    return failed(event, ctx, name=run["name"], branch=str(suite.get("head_branch") or ""),
                  sha=run["head_sha"], conclusion=str(run.get("conclusion") or ""),
                  app=str((run.get("app") or {}).get("slug", "")),
                  pulls=run.get("pull_requests") or suite.get("pull_requests"))


@router.register("check_suite", "completed",
                 reads={"check_suite.head_sha": str, "repository.full_name": str})
def check_suite(event: Event, ctx: Context) -> Decision:
    suite = event.payload["check_suite"]
    app = suite.get("app") or {}
    return failed(event, ctx, name=str(app.get("name") or "a check suite"),
                  branch=str(suite.get("head_branch") or ""), sha=suite["head_sha"],
                  conclusion=str(suite.get("conclusion") or ""), app=str(app.get("slug", "")),
                  pulls=suite.get("pull_requests"))


@router.register("workflow_run", "completed",
                 reads={"workflow_run.head_sha": str, "repository.full_name": str})
def workflow_run(event: Event, ctx: Context) -> Decision:
    run = event.payload["workflow_run"]
    return failed(event, ctx, name=str(run.get("name") or "a workflow"),
                  branch=str(run.get("head_branch") or ""), sha=run["head_sha"],
                  conclusion=str(run.get("conclusion") or ""), app="github-actions",
                  pulls=run.get("pull_requests"))


@router.register("status", reads={"sha": str, "context": str, "state": str,
                                  "repository.full_name": str})
def status(event: Event, ctx: Context) -> Decision:
    p = event.payload
    branches = [str(b.get("name", "")) for b in p.get("branches") or [] if isinstance(b, dict)]
    branch = next((b for b in branches if issue_of(b) is not None), "")
    return failed(event, ctx, name=p["context"], branch=branch, sha=p["sha"],
                  conclusion="failure" if p["state"] in STATUS_FAILED else p["state"],
                  app="", pulls=None)
