"""``check_run`` ``rerequested``: GitHub's "Re-run" on Handoff's own check run starts the job
again on its pull request (GitHub sends this action only to the App that made the run)."""

from __future__ import annotations

from bot.github.naming import CHECK_NAME
from handlers.router import Context, Router, is_bot
from handlers.vocabulary import Decision, Event, Ignore, StartJob

router = Router()


@router.register("check_run", "rerequested",
                 reads={"check_run.name": str, "repository.full_name": str,
                        "sender.login": str})
def rerequested(event: Event, ctx: Context) -> Decision:
    run = event.payload["check_run"]
    app = run.get("app") or {}
    if run["name"] != CHECK_NAME or app.get("slug") not in (None, ctx.slug):
        return Ignore("a re-run of another App's check run")
    if is_bot(event.payload.get("sender"), ctx):
        return Ignore("re-run asked by a bot")
    pulls = [p for p in run.get("pull_requests") or [] if isinstance(p.get("number"), int)]
    if not pulls:
        return Ignore("a re-run of a check run on no pull request")
    return StartJob(
        kind="retry", repo=event.repo, installation_id=event.installation_id,
        issue_number=None, pr_number=int(pulls[0]["number"]), requested_by=event.sender,
        trigger="rerun", context={"rerun_of": run.get("external_id") or ""},
    )
