"""``pull_request_review`` events: changes requested on an agent PR start an iteration."""

from __future__ import annotations

from bot.decisions import Decision, Event, Ignore, StartJob
from handlers.router import Context, Router, is_bot

router = Router()

AGENT_BRANCH_PREFIX = "agent/issue-"


@router.register("pull_request_review", "submitted")
def submitted(event: Event, ctx: Context) -> Decision:
    review = event.payload["review"]
    pull = event.payload["pull_request"]
    if is_bot(review.get("user"), ctx):
        return Ignore("review written by a bot")
    # Changes requested, or a plain review with comments: both ask the agent to address them.
    if str(review.get("state", "")).lower() not in ("changes_requested", "commented"):
        return Ignore(f"review state {review.get('state')!r} asks for nothing")
    if not str(pull["head"]["ref"]).startswith(AGENT_BRANCH_PREFIX):
        return Ignore("not an agent pull request")
    return StartJob(
        kind="review", repo=event.repo, installation_id=event.installation_id,
        issue_number=None, pr_number=int(pull["number"]), requested_by=str(review["user"]["login"]),
        feedback=str(review.get("body") or ""), trigger="review",
        context={"review_id": review.get("id")},
    )
