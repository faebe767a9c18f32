"""``pull_request_review`` events: a review on an agent PR that requests changes or mentions
the App starts an iteration.

An approval never does, nor does a comment-only review by its text alone: only a mention
(``@handoff``) does. Its inline comments arrive as ``pull_request_review_comment`` events and
start the iteration there (``handlers.review_comments``). Whether the reviewer may steer the
agent (write access) is checked when the job runs, and only writers' words reach the agent.
"""

from __future__ import annotations

from bot.github.naming import AGENT_BRANCH_PREFIX
from handlers.mentions import mention_command, mentions
from handlers.router import Context, Router, is_bot
from handlers.vocabulary import Decision, Event, Ignore, StartJob

router = Router()


@router.register("pull_request_review", "submitted",
                 reads={"review.user.login": str, "pull_request.number": int,
                        "pull_request.head.ref": str, "repository.full_name": str})
def submitted(event: Event, ctx: Context) -> Decision:
    review = event.payload["review"]
    pull = event.payload["pull_request"]
    if is_bot(review.get("user"), ctx):
        return Ignore("review written by a bot")
    state = str(review.get("state", "")).lower()
    body = str(review.get("body") or "").strip()
    named = mentions(body, ctx.slug)
    if state not in ("changes_requested", "commented") or (state == "commented" and not named):
        return Ignore(f"a {state or 'stateless'} review that does not mention @{ctx.slug} "
                      "asks for nothing (inline comments start work as their own events)")
    if not str(pull["head"]["ref"]).startswith(AGENT_BRANCH_PREFIX):
        return Ignore("not an agent pull request")
    rebase = named and mention_command(body, ctx.slug) == "rebase"
    return StartJob(
        kind="rebase" if rebase else "review", repo=event.repo,
        installation_id=event.installation_id, issue_number=None, pr_number=int(pull["number"]),
        requested_by=str(review["user"]["login"]), feedback="" if rebase else body,
        trigger="mention" if named else "review", context={"review_id": review.get("id")},
    )
