"""``issue_comment`` events: ``/agent`` or ``@handoff`` on an issue; ``/retry``, ``/rebase``,
``/cancel`` and ``@handoff`` on agent PRs."""

from __future__ import annotations

import re
from typing import Any

from handlers.issues import snapshot
from handlers.mentions import mention_command, mentions
from handlers.router import Context, Router, is_bot
from handlers.vocabulary import CancelJob, Decision, Event, Ignore, StartJob

router = Router()

COMMAND = re.compile(r"\A\s*/(agent|retry|cancel|rebase)\b[ \t]*(.*)\Z", re.DOTALL)


def parse_command(body: str) -> tuple[str, str] | None:
    """The slash command a comment starts with and the text after it, if any."""
    match = COMMAND.match(body or "")
    if not match:
        return None
    return match.group(1), match.group(2).strip()


def asked(body: str, ctx: Context) -> tuple[str, str] | None:
    """What the comment asks: a slash command, ``@handoff rebase``, or a mention (whose
    text, the whole comment, is the request); None when it asks nothing."""
    if command := parse_command(body):
        return command
    if not mentions(body, ctx.slug):
        return None
    return (mention_command(body, ctx.slug) or "mention"), body.strip()


@router.register("issue_comment", "created",
                 reads={"comment.user.login": str, "issue.number": int,
                        "repository.full_name": str})
def created(event: Event, ctx: Context) -> Decision:
    comment = event.payload["comment"]
    if is_bot(comment.get("user"), ctx) or is_bot(event.payload.get("sender"), ctx):
        return Ignore("comment written by a bot")
    command = asked(str(comment.get("body") or ""), ctx)
    if command is None:
        return Ignore("no command in comment")
    name, text = command
    issue = event.payload["issue"]
    number = int(issue["number"])
    on_pr = bool(issue.get("pull_request"))
    author = str(comment["user"]["login"])
    if name == "cancel":
        return CancelJob(
            repo=event.repo, requested_by=author, reason=f"/cancel by @{author}",
            issue_number=None if on_pr else number, pr_number=number if on_pr else None,
            command=True, comment_id=comment.get("id"),
        )
    if not on_pr:
        if name not in ("agent", "mention"):
            return Ignore(f"/{name} is for agent pull requests")
        return _implement(event, issue, author, text, comment, "comment" if name == "agent"
                          else "mention")
    if name == "agent":
        return Ignore("/agent is for issues; use /retry on an agent PR")
    kind = {"retry": "retry", "rebase": "rebase", "mention": "mention"}[name]
    return StartJob(
        kind=kind, repo=event.repo, installation_id=event.installation_id,
        issue_number=None, pr_number=number, requested_by=author,
        feedback="" if kind == "rebase" else text,
        trigger="mention" if kind == "mention" else "comment",
        context={"comment_id": comment.get("id")},
    )


def _implement(event: Event, issue: dict[str, Any], author: str, text: str,
               comment: dict[str, Any], trigger: str) -> StartJob:
    return StartJob(
        kind="implement", repo=event.repo, installation_id=event.installation_id,
        issue_number=int(issue["number"]), requested_by=author, feedback=text, trigger=trigger,
        context={"comment_id": comment.get("id"), "issue_snapshot": snapshot(issue)},
    )
