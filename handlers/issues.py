"""``issues`` events: the trigger label starts a job, removing it cancels a queued one."""

from __future__ import annotations

from bot.decisions import CancelJob, Decision, Event, Ignore, StartJob
from handlers.router import Context, Router, is_bot

router = Router()


def _label(event: Event) -> str:
    return str((event.payload.get("label") or {}).get("name", ""))


@router.register("issues", "labeled")
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
    )


@router.register("issues", "unlabeled")
def unlabeled(event: Event, ctx: Context) -> Decision:
    if _label(event) != ctx.trigger_label:
        return Ignore(f"label {_label(event)!r} is not the trigger label")
    return CancelJob(
        repo=event.repo, issue_number=int(event.payload["issue"]["number"]),
        requested_by=event.sender, reason="the trigger label was removed", only_queued=True,
    )


@router.register("issues", "closed")
def closed(event: Event, ctx: Context) -> Decision:
    return CancelJob(
        repo=event.repo, issue_number=int(event.payload["issue"]["number"]),
        requested_by=event.sender, reason="the issue was closed",
    )
