"""``issue_comment`` events: ``/agent`` on an issue, ``/retry`` and ``/cancel`` on agent PRs."""

from __future__ import annotations

import re

from handlers.issues import snapshot
from handlers.router import Context, Router, is_bot
from handlers.vocabulary import CancelJob, Decision, Event, Ignore, StartJob

router = Router()

COMMAND = re.compile(r"\A\s*/(agent|retry|cancel)\b[ \t]*(.*)\Z", re.DOTALL)


def parse_command(body: str) -> tuple[str, str] | None:
    """The slash command a comment starts with and the text after it, if any."""
    match = COMMAND.match(body or "")
    if not match:
        return None
    return match.group(1), match.group(2).strip()


@router.register("issue_comment", "created",
                 reads={"comment.user.login": str, "issue.number": int,
                        "repository.full_name": str})
def created(event: Event, ctx: Context) -> Decision:
    comment = event.payload["comment"]
    if is_bot(comment.get("user"), ctx) or is_bot(event.payload.get("sender"), ctx):
        return Ignore("comment written by a bot")
    command = parse_command(str(comment.get("body", "")))
    if command is None:
        return Ignore("no command in comment")
    name, text = command
    issue = event.payload["issue"]
    number = int(issue["number"])
    on_pr = bool(issue.get("pull_request"))
    author = str(comment["user"]["login"])
    if name == "agent":
        if on_pr:
            return Ignore("/agent is for issues; use /retry on an agent PR")
        return StartJob(
            kind="implement", repo=event.repo, installation_id=event.installation_id,
            issue_number=number, requested_by=author, feedback=text, trigger="comment",
            context={"comment_id": comment.get("id"), "issue_snapshot": snapshot(issue)},
        )
    if name == "cancel":
        return CancelJob(
            repo=event.repo, requested_by=author, reason=f"/cancel by @{author}",
            issue_number=None if on_pr else number, pr_number=number if on_pr else None,
            command=True, comment_id=comment.get("id"),
        )
    if not on_pr:
        return Ignore("/retry is for agent pull requests")
    return StartJob(
        kind="retry", repo=event.repo, installation_id=event.installation_id,
        issue_number=None, pr_number=number, requested_by=author, feedback=text,
        trigger="comment", context={"comment_id": comment.get("id")},
    )
