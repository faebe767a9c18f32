"""``pull_request_review`` events: changes requested on an agent PR start an iteration.

An approval never does. A review that only comments does when it carries inline comments
(GitHub sends those with an empty review body) or its text asks for a change; a plain remark
such as "LGTM" does not. Whether the reviewer may steer the agent (write access) is checked
when the job runs, and only that reviewer's comments reach the agent.
"""

from __future__ import annotations

import re

from bot.github.naming import AGENT_BRANCH_PREFIX
from handlers.router import Context, Router, is_bot
from handlers.vocabulary import Decision, Event, Ignore, StartJob

router = Router()

# Words that ask for a change in a comment-only review.
ASKS = re.compile(r"\b(please|pls|could you|can you|would you|should|shouldn't|must|needs? to|"
                  r"instead|rather|change|fix|rename|remove|delete|add|drop|move|use|avoid|"
                  r"don't|do not|missing|wrong|broken|bug|revert|split|handle|why)\b|\?",
                  re.IGNORECASE)


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
    if state not in ("changes_requested", "commented"):
        return Ignore(f"review state {review.get('state')!r} asks for nothing")
    if state == "commented" and body and not ASKS.search(body):
        return Ignore("a comment-only review that asks for no change")
    if not str(pull["head"]["ref"]).startswith(AGENT_BRANCH_PREFIX):
        return Ignore("not an agent pull request")
    return StartJob(
        kind="review", repo=event.repo, installation_id=event.installation_id,
        issue_number=None, pr_number=int(pull["number"]), requested_by=str(review["user"]["login"]),
        feedback=str(review.get("body") or ""), trigger="review",
        context={"review_id": review.get("id")},
    )
