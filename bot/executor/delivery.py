"""The push step: commit the agent's change and push it, never by force and never without the
job's lease; a commit an earlier attempt kept or pushed, or an earlier job's push that never
got its pull request, is found again."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence

from bot.config import Settings
from bot.executor.agent.loop import AgentResult
from bot.executor.changes import changed_files, refusal
from bot.executor.conflicts import resolved
from bot.executor.gitops import Checkout, GitError, unreachable
from bot.executor.run import Run
from bot.executor.steps import Prepared, Pushed
from bot.executor.workspace import Workspaces
from bot.github.client import GitHubApiError
from bot.jobs.changes import FileChange
from bot.jobs.outcome import JobFailed
from bot.jobs.record import Delivery, JobRecord
from bot.jobs.states import Failure
from bot.jobs.store import Job, LeaseLost
from bot.reporter import wording
from bot.reporter.markdown import code, inline, plain
from bot.reporter.report import shorten


def commit_title(run: Run, p: Prepared) -> str:
    """The commit's title, from the issue's number and title (never from the agent)."""
    form = wording.COMMIT_TITLES.get(run.job.kind, wording.COMMIT_TITLES["implement"])
    return form.format(number=run.job.issue_number, title=plain(p.issue["title"]))[:72]


log = logging.getLogger("handoff.executor")
# The line every commit of Handoff's names its job by.
JOB_LINE = re.compile(r"^Handoff job (\d+) for #(\d+)\.$", re.MULTILINE)
# What a job carries over from an earlier job whose pushed commit it opens the PR for: all
# but how it was announced, its status comment, its branch and what it delivered.
OWN_FIELDS = ("acknowledged", "announced", "position", "requester_checked",
              "status_comment_id", "timings")


def app_identity(settings: Settings) -> tuple[str, str]:
    """The name and e-mail Handoff commits as: the App's bot account."""
    login = settings.bot_login
    return login, f"{settings.app_id}+{login}@users.noreply.github.com"


async def deliver(run: Run, p: Prepared, outcome: AgentResult, settings: Settings,
                  workspaces: Workspaces, conflicts: Sequence[str] = ()) -> Pushed:
    """Check the agent's change (a /rebase's ``conflicts`` resolved), commit it as the App,
    keep the commit on this machine, and push it; recorded as pushed, with its summary. An
    unfinished run keeps its work on the branch and ends the job."""
    co = p.checkout
    files = await changed_files(co, p.start_sha)
    if not outcome.finished:
        await keep_work(run, p, files, outcome, settings)
        raise JobFailed(outcome.category, outcome.stop_reason)
    if not files:
        raise JobFailed(Failure.NO_CHANGES, wording.NO_CHANGES.format(
            summary=inline(shorten(outcome.summary, 500))))
    if why := await refusal(co, p.start_sha, files):
        raise JobFailed(Failure.PUSH_REFUSED, why)
    # A /rebase's conflicts: no marker left, said in the summary.
    summary = run.record.summary = resolved(co, list(conflicts), p.base) + outcome.summary
    await run.stage("pushing")
    head = await commit(run, co, settings, commit_title(run, p))
    await keep_commit(run, co, workspaces, head)
    await push(run, p)
    run.record.delivery.head_sha, run.record.delivery.pushed_branch = head, p.branch
    await run.save()  # a job resumed after this finds its commit and opens the PR
    run.mark("push")
    return Pushed(head, files, summary)


async def commit_and_push(run: Run, p: Prepared, settings: Settings, title: str) -> str:
    """Commit the work tree as the App (the requester as co-author) and push; the commit."""
    await commit(run, p.checkout, settings, title)
    await push(run, p)
    return await p.checkout.rev("HEAD")


async def commit(run: Run, co: Checkout, settings: Settings, title: str) -> str:
    """Commit the work tree as the App, the requester as co-author; the commit."""
    job = run.job
    name, email = app_identity(settings)
    message = (f"{title}\n\nHandoff job {job.id} for #{job.issue_number}.\n\n"
               f"Co-authored-by: {job.requested_by} "
               f"<{job.requested_by}@users.noreply.github.com>\n")
    await co.git("-c", f"user.name={name}", "-c", f"user.email={email}",
                 "commit", "--quiet", "--no-verify", "-m", message)
    return await co.rev("HEAD")


async def kept_commit(run: Run, p: Prepared, sha: str) -> str | None:
    """The commit an earlier attempt of this job made and kept (``sha``, its record's
    ``delivery.kept_sha``), if this machine's mirror has it and it still goes on from the branch
    as it is now (made on its head, or pushed already)."""
    if not sha:
        return None
    try:
        parent = await p.checkout.rev(f"{sha}^")
    except GitError:
        log.info("job %s: its kept commit %s is not on this machine", run.job.id, sha[:7])
        return None
    return sha if p.start_sha in (sha, parent) else None


async def push(run: Run, p: Prepared) -> None:
    """Push HEAD to the job's branch: a person's commits on it are kept (no force), a rejected
    push is a stated failure, GitHub not answering is ``GitHubApiError`` (unavailable: tried
    later), and no push happens without the lease."""
    branch = p.branch
    if not await run.store.holds(run.job.id, run.job.lease_token):
        raise LeaseLost(f"job {run.job.id}: lease gone before the push to `{branch}`")
    for attempt in range(2):
        token = await run.gh.token(fresh=attempt > 0)
        try:
            # To the URL the API gave, never a remote read from any config.
            await p.checkout.git("push", "--quiet", "--no-verify", p.clone_url,
                         f"HEAD:refs/heads/{branch}", token=token)
            return
        except GitError as exc:
            text = str(exc)
            if attempt == 0 and ("401" in text or "Authentication" in text or
                                 "could not read" in text):
                continue
            if unreachable(exc):
                raise GitHubApiError(f"pushing to `{branch}`: GitHub did not answer: "
                                     f"{text[-300:]}", unavailable=True) from exc
            raise JobFailed(Failure.PUSH_REFUSED, wording.PUSH_REFUSED.format(
                branch=code(branch), error=inline(text[-500:]))) from exc


async def pushed_before(run: Run, p: Prepared, summary: str) -> str | None:
    """On a resumed job: the commit an earlier attempt pushed (found on the branch by its
    "Handoff job N" line), if it got as far as pushing (``summary``, its record's, is kept
    with the push)."""
    if run.job.stage != "pushing" or not summary:
        return None
    out = await p.checkout.git("log", "--format=%H", "--fixed-strings",
                               f"--grep=Handoff job {run.job.id} for #",
                               f"refs/remotes/origin/{p.base}..HEAD")
    return out.split()[0] if out.strip() else None


async def unopened_push(run: Run, p: Prepared, settings: Settings) -> Job | None:
    """For a new job on an issue: the earlier job whose pushed commit heads the branch but
    never got its pull request (opening it failed), once that head is found to be Handoff's
    own (authored and committed by the App, naming that job of this issue, the very commit
    it recorded) and not merged into the base."""
    job, head, co = run.job, p.start_sha, p.checkout
    if job.kind != "implement" or job.pr_number or not head:
        return None
    if not int(await co.git("rev-list", "--count", f"{p.base_sha}..{head}")):
        return None  # the base holds it: merged, or the branch is the base
    fields = (await co.git("log", "-1", "--format=%an%x00%ae%x00%cn%x00%ce%x00%B", head)
              ).split("\0", 4)
    if len(fields) < 5 or fields[:4] != [*app_identity(settings)] * 2:
        return None
    named = JOB_LINE.search(fields[4])
    if named is None or int(named.group(2)) != job.issue_number:
        return None
    earlier = await run.store.get_job(int(named.group(1)))
    if earlier is None or earlier.id == job.id or earlier.repo != job.repo or \
            earlier.issue_number != job.issue_number or earlier.state != "failed":
        return None
    done = earlier.result.delivery
    if done.pr_url or done.head_sha != head or done.pushed_branch != p.branch:
        return None
    return earlier


def carried_over(record: JobRecord, earlier: JobRecord) -> JobRecord:
    """This job's record with what an earlier job found and did for the commit it pushed
    (its summary, tests, verdict and spend), to open the pull request that job could not."""
    out = earlier.model_copy(deep=True, update={name: getattr(record, name)
                                                for name in OWN_FIELDS})
    done = earlier.delivery
    out.delivery = Delivery(branch=record.delivery.branch, base=record.delivery.base,
                            base_sha=done.base_sha, head_sha=done.head_sha,
                            pushed_branch=done.pushed_branch)
    out.iterations = []
    return out


async def keep_work(run: Run, p: Prepared, files: list[FileChange], outcome: AgentResult,
                    settings: Settings) -> None:
    """Push what the agent did so far as a work-in-progress commit, when it is safe."""
    if not files or await refusal(p.checkout, p.start_sha, files):
        return
    with contextlib.suppress(JobFailed):
        head = await commit_and_push(run, p, settings,
                                     plain(wording.WIP_TITLE.format(why=outcome.stop_reason),
                                           72))
        delivery = run.record.delivery
        delivery.wip_branch, delivery.head_sha = p.branch, head


async def keep_commit(run: Run, co: Checkout, workspaces: Workspaces, head: str) -> None:
    """Keep the commit on this machine before pushing it, so that if GitHub does not take it
    now (or the worker stops), the job goes on later without running the agent."""
    try:
        await workspaces.keep(run.job.id, run.job.repo, co, head)
    except GitError as exc:
        log.warning("job %s: could not keep commit %s (%s)", run.job.id, head[:7], exc)
        return
    run.record.delivery.kept_sha = head
    await run.save()


async def push_kept(run: Run, p: Prepared, kept: str) -> str:
    """Go on from a commit an earlier attempt made and kept: push it (unless it is on the
    branch already); what the status comment says of it."""
    if kept == p.start_sha:
        return wording.RESUMED_AFTER_PUSH.format(head=kept[:7])
    await p.checkout.git("reset", "--quiet", "--hard", kept)
    await push(run, p)
    return wording.RESUMED_WITH_COMMIT.format(head=kept[:7])
