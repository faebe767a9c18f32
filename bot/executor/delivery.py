"""The push step: commit the agent's change and push it, never by force and never without the
job's lease; a push an earlier attempt made is found again."""

from __future__ import annotations

import contextlib

from bot.config import Settings
from bot.executor.agent.loop import AgentResult
from bot.executor.changes import FileChange, refusal
from bot.executor.gitops import Checkout, GitError
from bot.executor.run import Run
from bot.jobs.states import Failure
from bot.jobs.store import LeaseLost
from bot.jobs.worker import JobFailed
from bot.reporter import wording
from bot.reporter.markdown import code, inline, plain


def commit_title(run: Run) -> str:
    """The commit's title, from the issue's number and title (never from the agent)."""
    form = wording.COMMIT_TITLES.get(run.job.kind, wording.COMMIT_TITLES["implement"])
    return form.format(number=run.job.issue_number, title=plain(run.issue["title"]))[:72]


async def commit_and_push(run: Run, co: Checkout, settings: Settings, title: str) -> str:
    """Commit the work tree as the App (the requester as co-author) and push; the commit."""
    job, login = run.job, settings.bot_login
    message = (f"{title}\n\nHandoff job {job.id} for #{job.issue_number}.\n\n"
               f"Co-authored-by: {job.requested_by} "
               f"<{job.requested_by}@users.noreply.github.com>\n")
    await co.git("-c", f"user.name={login}", "-c",
                 f"user.email={settings.app_id}+{login}@users.noreply.github.com",
                 "commit", "--quiet", "--no-verify", "-m", message)
    await push(run, co)
    return await co.rev("HEAD")


async def push(run: Run, co: Checkout) -> None:
    """Push HEAD to the job's branch: a person's commits on it are kept (no force), a rejected
    push is a stated failure, and no push happens without the lease."""
    branch = run.record.branch
    if not await run.store.holds(run.job.id, run.job.lease_token):
        raise LeaseLost(f"job {run.job.id}: lease gone before the push to `{branch}`")
    for attempt in range(2):
        token = await run.gh.token(fresh=attempt > 0)
        try:
            # To the URL the API gave, never a remote read from any config.
            await co.git("push", "--quiet", "--no-verify", run.clone_url,
                         f"HEAD:refs/heads/{branch}", token=token)
            return
        except GitError as exc:
            text = str(exc)
            if attempt == 0 and ("401" in text or "Authentication" in text or
                                 "could not read" in text):
                continue
            raise JobFailed(Failure.PUSH_REFUSED, wording.PUSH_REFUSED.format(
                branch=code(branch), error=inline(text[-500:]))) from exc


async def pushed_before(run: Run, co: Checkout) -> str | None:
    """On a resumed job: the commit an earlier attempt pushed (found on the branch by its
    "Handoff job N" line), if it got as far as pushing."""
    if run.job.stage != "pushing" or not run.record.summary:
        return None
    out = await co.git("log", "--format=%H", "--fixed-strings",
                       f"--grep=Handoff job {run.job.id} for #",
                       f"refs/remotes/origin/{run.base}..HEAD")
    return out.split()[0] if out.strip() else None


async def keep_work(run: Run, files: list[FileChange], outcome: AgentResult,
                    settings: Settings) -> None:
    """Push what the agent did so far as a work-in-progress commit, when it is safe."""
    assert run.checkout is not None
    if not files or await refusal(run.checkout, run.start_sha, files):
        return
    with contextlib.suppress(JobFailed):
        head = await commit_and_push(run, run.checkout, settings,
                                     plain(wording.WIP_TITLE.format(why=outcome.stop_reason),
                                           72))
        run.record.wip_branch, run.record.head_sha = run.record.branch, head
