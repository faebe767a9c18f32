"""``issues`` events: the trigger label starts a job, removing it cancels a queued one."""

from __future__ import annotations

from typing import Any

from handlers.router import Context, Router, is_bot
from handlers.vocabulary import CancelJob, Decision, Event, Ignore, RecordEdit, StartJob

router = Router()


def snapshot(issue: dict[str, Any]) -> dict[str, str]:
    """The issue as the writer who handed it over saw it: later edits by others are left
    out of the agent's spec."""
    return {"title": str(issue.get("title") or ""), "body": str(issue.get("body") or "")}


def _label(event: Event) -> str:
    return str((event.payload.get("label") or {}).get("name", ""))


# What every issues handler reads besides its own fields.
ISSUE = {"issue.number": int, "repository.full_name": str, "sender.login": str}


@router.register("issues", "labeled", reads={**ISSUE, "label.name": str})
def labeled(event: Event, ctx: Context) -> Decision:
    label = _label(event)
    if label != ctx.trigger_label:
        return Ignore(f"label {label!r} is not the trigger label")
    issue = event.payload["issue"]
    if issue.get("pull_request"):
        return Ignore("the trigger label is for issues, not pull requests")
    if issue.get("state") == "closed":
        return Ignore("issue is closed")
    if is_bot(event.payload.get("sender"), ctx):
        return Ignore("labeled by a bot")
    return StartJob(
        kind="implement", repo=event.repo, installation_id=event.installation_id,
        issue_number=int(issue["number"]), requested_by=event.sender, trigger="label",
        context={"issue_snapshot": snapshot(issue)},
    )


@router.register("issues", "edited", reads=ISSUE)
def edited(event: Event, ctx: Context) -> Decision:
    if is_bot(event.payload.get("sender"), ctx):
        return Ignore("edited by a bot")
    issue = event.payload["issue"]
    text = snapshot(issue)
    return RecordEdit(repo=event.repo, issue_number=int(issue["number"]), editor=event.sender,
                      title=text["title"], body=text["body"])


@router.register("issues", "unlabeled", reads={**ISSUE, "label.name": str})
def unlabeled(event: Event, ctx: Context) -> Decision:
    if _label(event) != ctx.trigger_label:
        return Ignore(f"label {_label(event)!r} is not the trigger label")
    return CancelJob(
        repo=event.repo, issue_number=int(event.payload["issue"]["number"]),
        requested_by=event.sender, reason="the trigger label was removed", only_queued=True,
    )


@router.register("issues", "closed", reads=ISSUE)
def closed(event: Event, ctx: Context) -> Decision:
    return CancelJob(
        repo=event.repo, issue_number=int(event.payload["issue"]["number"]),
        requested_by=event.sender, reason=f"the issue was closed by @{event.sender}",
        check_running=True,
    )
