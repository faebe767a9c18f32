"""``pull_request_review_comment`` events: a comment on a line of an agent PR.

A comment that mentions the App (``@handoff``) starts an iteration answered in its thread; a
new thread by a collaborator (a reviewer's inline comment) starts a review iteration, one per
review (the review's other comments join it); a reply in a thread that does not mention the
App is people talking and starts nothing, and so is an outsider's comment on a line.
"""

from __future__ import annotations

from bot.github.naming import AGENT_BRANCH_PREFIX
from handlers.mentions import mention_command, mentions
from handlers.router import Context, Router, is_bot
from handlers.vocabulary import Decision, Event, Ignore, StartJob

router = Router()

# Who may start a review by inline comments alone (write access is checked when it runs);
# anyone else starts one only by naming the App, and hears why not.
COLLABORATORS = ("OWNER", "MEMBER", "COLLABORATOR")


@router.register("pull_request_review_comment", "created",
                 reads={"comment.user.login": str, "comment.id": int,
                        "pull_request.number": int, "pull_request.head.ref": str,
                        "repository.full_name": str})
def created(event: Event, ctx: Context) -> Decision:
    comment = event.payload["comment"]
    pull = event.payload["pull_request"]
    if is_bot(comment.get("user"), ctx) or is_bot(event.payload.get("sender"), ctx):
        return Ignore("review comment written by a bot")
    if not str(pull["head"]["ref"]).startswith(AGENT_BRANCH_PREFIX):
        return Ignore("not an agent pull request")
    body = str(comment.get("body") or "").strip()
    reply_to = comment.get("in_reply_to_id")
    context = {"review_comment_id": comment["id"], "thread_id": reply_to or comment["id"],
               "review_id": comment.get("pull_request_review_id")}

    def start(kind: str, trigger: str, feedback: str = "") -> StartJob:
        return StartJob(kind=kind, repo=event.repo, installation_id=event.installation_id,
                        issue_number=None, pr_number=int(pull["number"]),
                        requested_by=str(comment["user"]["login"]), feedback=feedback,
                        trigger=trigger, context=context)

    if mentions(body, ctx.slug):
        if mention_command(body, ctx.slug) == "rebase":
            return start("rebase", "mention")
        return start("mention", "mention", body)
    if reply_to:
        return Ignore(f"a reply in a review thread that does not mention @{ctx.slug}")
    if comment.get("author_association") not in COLLABORATORS:
        return Ignore("an inline comment by someone outside the repository that does not "
                      f"mention @{ctx.slug} (whether a writer asks is checked when it runs)")
    return start("review", "review")
