"""Makes every job's end visible on GitHub: the PR, or a comment that says what broke."""

from __future__ import annotations

import logging

from bot.github.client import GitHubApiError, GitHubApp, RepoClient
from bot.github.naming import CHECK_NAME
from bot.jobs.outcome import Unreportable
from bot.jobs.states import Failure, State
from bot.jobs.store import Job
from bot.logs import printable, redact
from bot.reporter import wording
from bot.reporter.checks import close_open_check
from bot.reporter.markdown import code, quote
from bot.reporter.status import StatusComment, job_url

log = logging.getLogger("handoff.reporter")
FULL_SUMMARY = "<details><summary>The agent's full summary</summary>\n\n{text}\n\n</details>"
CUT_MARK = "… (cut; the full text is below)"


def shorten(text: str, limit: int, mark: str = CUT_MARK) -> str:
    """``text`` cut to about ``limit`` characters on a line or word boundary, never mid-word."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = head.rfind("\n")
    if cut < limit // 2:
        cut = max(head.rfind(" "), head.rfind("\t"))
    if cut < limit // 2:
        cut = limit
    return head[:cut].rstrip() + mark

# category: (what Handoff was doing, as the end of "failed while ...", what to do next)
STEPS = {
    Failure.NOT_PERMITTED: ("checking who asked", ""),
    Failure.CONFIG_ERROR: ("reading `.github/handoff.yml`",
                           "Fix the file on the default branch, then ask again."),
    Failure.SETUP_FAILED: ("preparing the workspace and sandbox",
                           "Check the setup command and image, then ask again."),
    Failure.MODEL_ERROR: ("calling the model", "This is often passing; ask again in a while."),
    Failure.BUDGET_EXHAUSTED: ("the agent was working", "Ask again with narrower instructions, "
                               "or raise the budget in `.github/handoff.yml`."),
    Failure.MONTHLY_BUDGET: ("checking the monthly budget", "Ask again after the budget "
                             "resets, or ask the people who run Handoff to raise it."),
    Failure.AGENT_ERROR: ("the agent was working",
                          "Check the agent command's output in the transcript."),
    Failure.NO_CHANGES: ("the agent was working",
                         "Add detail to the issue about what should change, then ask again."),
    Failure.PUSH_REFUSED: ("pushing the branch", "Make that part of the change by hand, or "
                           "adjust the issue so the agent leaves it alone."),
    Failure.GITHUB_ERROR: ("talking to GitHub", "GitHub failed repeatedly; ask again later."),
    Failure.WORKER_LOST: ("running the job", "Ask again; if it repeats, check the worker's logs."),
    Failure.INTERNAL: ("running the job",
                       "This is a bug in Handoff; the worker's log has details."),
    Failure.NOT_CONFIGURED: ("running the job", "No GitHub App is configured."),
    Failure.DISK_LIMIT: ("running a command in the sandbox", "The workspace outgrew its disk "
                         "limit (`HANDOFF_WORKSPACE_MAX_MB`); narrow the task or raise it."),
    Failure.SANDBOX_LIMIT: ("running a command in the sandbox", "A sandbox limit stopped the "
                            "command; the cause above says which."),
    Failure.CI_STOPPED: ("fixing the repository's own checks", "Fix what the checks above "
                         "report by hand, or say what the agent should do differently."),
}


def public_cause(job: Job) -> str:
    """Why the job failed, as GitHub shows it: an internal error's own text (host paths,
    library messages) stays in the worker's log and on the dashboard."""
    if job.category == Failure.INTERNAL:
        return wording.INTERNAL_CAUSE.format(job=job.id)
    return printable(job.reason, keep="\t\n")


def failure_comment(job: Job) -> str:
    """The comment posted when a job fails: step, cause, what was kept, how to try again."""
    if job.category == Failure.NOT_PERMITTED:
        return (f"Thanks for the request, @{job.requested_by}. Handoff only takes work from "
                "people with write access to this repository, so no agent was started. "
                "A maintainer can hand this issue over instead.")
    step, advice = STEPS.get(Failure(job.category), ("running the job", "")) \
        if job.category in set(Failure) else ("running the job", "")
    kept = "Nothing was pushed."
    record = job.result
    if (pushed := record.delivery.pushed_branch) and not record.delivery.pr_url:
        kept = (f"The change is pushed to branch {code(pushed)} (commit "
                f"{record.delivery.head_sha[:7]}), but no pull request was opened; "
                "open one from that branch, or ask again and Handoff opens it.")
    elif record.delivery.wip_branch:
        kept = (f"The work so far is kept on branch {code(record.delivery.wip_branch)} "
                f"(commit {record.delivery.head_sha[:7]}).")
    again = "comment `/retry <what to do differently>`" if job.kind != "implement" else \
        "comment `/agent`, or remove and re-add the label"
    spend = record.agent.spend
    cost = ""
    if spend.steps:
        cost = (f"\n\nSpent: {spend.steps} steps, "
                f"{spend.input_tokens + spend.output_tokens:,} tokens, "
                f"${spend.cost_usd:.4f}.")
    full = ""
    summary = record.summary.strip()
    if summary and CUT_MARK in job.reason:
        full = "\n\n" + FULL_SUMMARY.format(text=quote(summary[:50_000]))
    return redact(f"**Handoff job {job.id} failed** while {step}.\n\n"
                  f"**Cause:** {public_cause(job)}{still_failing(job)}\n\n"
                  f"**Kept:** {kept}{cost}\n\n"
                  f"**To try again:** {advice} Then {again}.").replace("  ", " ") + redact(full)


def still_failing(job: Job) -> str:
    """For a CI fix that ended otherwise than by stopping (a budget, an error): the checks it
    was fixing, still failing (a stop names them in its cause)."""
    ci = job.result.ci
    if job.kind != "ci-fix" or job.category == Failure.CI_STOPPED or ci is None or \
            not ci.names:
        return ""
    return "\n\n**Checks still failing:** " + ", ".join(
        f"{code(n.name)} ({n.conclusion})" for n in ci.names) + "."


def final_marker(job: Job) -> str:
    """Hidden in a job's final comment, so a retried report finds it instead of posting again."""
    return f"<!-- handoff:final job={job.id} -->"


def refused_for_good(exc: GitHubApiError) -> bool:
    """GitHub will not take this however often it is asked: the App was uninstalled or
    suspended, the repository archived or deleted, the issue locked or gone."""
    return exc.retry_at is None and exc.status in (401, 403, 404, 410, 422) and \
        "rate limit" not in str(exc).lower()


class GitHubReporter:
    """Posts final states on the issue or the agent PR; posting again finds what was posted."""

    def __init__(self, github: GitHubApp, public_url: str = "") -> None:
        self.github, self.public_url = github, public_url

    async def report(self, job: Job) -> None:
        if job.installation_id is None:
            raise Unreportable("the delivery named no installation of the App, so there is "
                               "no repository it may post in")
        gh = self.github.repo(job.installation_id, job.repo)
        try:
            await self._report(gh, job)
        except GitHubApiError as exc:
            if refused_for_good(exc):
                raise Unreportable(f"the App cannot post in {job.repo} any more ({exc})") \
                    from exc
            raise

    async def _post_once(self, gh: RepoClient, job: Job, body: str) -> None:
        marker = final_marker(job)
        for comment in await gh.list_comments(job.target):
            if marker in str(comment.get("body") or ""):
                log.info("job %s: its final comment is there already", job.id)
                return
        await gh.create_comment(job.target, f"{body}\n\n{marker}")

    async def _reply_once(self, gh: RepoClient, job: Job, thread: int, body: str) -> None:
        """The final word in the review thread the job was asked in, once."""
        assert job.pr_number is not None
        marker = final_marker(job)
        for comment in await gh.review_comments(job.pr_number):
            if marker in str(comment.get("body") or ""):
                log.info("job %s: its final reply is there already", job.id)
                return
        await gh.reply_review_comment(job.pr_number, thread, f"{body}\n\n{marker}")

    async def _report(self, gh: RepoClient, job: Job) -> None:
        await gh.token()
        target = job.target
        status = StatusComment(gh, target, job.id, 0, job.result.status_comment_id,
                               job_url(self.public_url, job.id))
        if job.state == State.SUCCEEDED:
            if status.comment_id is not None:
                await status.set(job.result.delivery.final_stage or "done",
                                 job.result.delivery.final_detail or
                                 f"Pull request: {job.result.delivery.pr_url}")
            return
        if job.state == State.CANCELLED:
            text = f"Stopped job {job.id}: {job.reason or 'cancelled'}."
            await close_open_check(gh, job.result, "cancelled", "Cancelled", text)
            if status.comment_id is not None:
                await status.set("cancelled", text)
            else:
                await self._post_once(gh, job, text)
            return
        body = failure_comment(job)
        thread = job.context.get("thread_id") if job.pr_number else None
        if status.comment_id is not None:
            where = "in the review thread" if thread else "below"
            await status.set("failed", f"See {where}: {shorten(public_cause(job), 300, '…')}")
        if thread:  # asked in a review thread: answered there
            await self._reply_once(gh, job, int(thread), body)
        else:
            await self._post_once(gh, job, body)
        if await close_open_check(gh, job.result, "failure", f"Failed: {job.category}",
                                  public_cause(job)):
            return
        check_id, head = job.result.delivery.check_run_id, job.result.delivery.head_sha
        if head and not check_id:
            try:
                await gh.create_check_run(
                    name=CHECK_NAME, head_sha=head, status="completed", conclusion="failure",
                    external_id=str(job.id),
                    output={"title": f"Failed: {job.category}",
                            "summary": public_cause(job)[:60_000]})
            except GitHubApiError as exc:
                if not refused_for_good(exc):
                    raise  # the retry finds the comment posted and posts only the check run
                log.warning("job %s: the failed check run cannot be posted (%s); the comment "
                            "says it all", job.id, exc)
