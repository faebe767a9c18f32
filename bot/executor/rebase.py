"""``/rebase``: merge the base branch into the agent branch (never a rebase that rewrites it,
never a force-push). A clean merge is committed and pushed at once; a conflicted one is left
in the work tree for the agent, with both sides shown in its spec, and committed as the merge
once no conflict marker is left (``bot.executor.conflicts``)."""

from __future__ import annotations

from bot.config import Settings
from bot.executor.delivery import app_identity, push
from bot.executor.gitops import NO_DRIVERS, Checkout, GitError
from bot.executor.progress import close_check
from bot.executor.run import Run
from bot.executor.steps import Prepared
from bot.jobs.outcome import JobResult
from bot.reporter import wording

MAX_SIDE = 6_000  # one side of one file in the spec


async def merge_base_branch(run: Run, p: Prepared, settings: Settings
                            ) -> JobResult | list[str]:
    """Merge ``origin/<base>`` into the checked-out branch as the App: the job's result when
    that is all (merged and pushed, or nothing to merge), else the conflicted files, left in
    the work tree for the agent."""
    co, base_ref = p.checkout, f"refs/remotes/origin/{p.base}"
    try:
        await co.git("merge-base", "--is-ancestor", base_ref, "HEAD")
        return await _done(run, wording.UP_TO_DATE.format(base=p.base, base_sha=p.base_sha[:7]))
    except GitError:
        pass  # the base has commits the branch lacks
    name, email = app_identity(settings)
    message = wording.MERGE_MESSAGE.format(base=p.base, job=run.job.id,
                                           number=run.job.issue_number)
    try:
        await co.git("-c", f"user.name={name}", "-c", f"user.email={email}", "merge",
                     "--no-ff", "--no-verify", "-m", message, base_ref)
    except GitError:
        out = await co.git("diff", "--name-only", "-z", "--diff-filter=U")
        if not (conflicts := [f for f in out.split("\0") if f]):
            raise
        return conflicts
    head = await co.rev("HEAD")
    await run.stage("pushing")
    await push(run, p)
    run.record.delivery.head_sha, run.record.delivery.pushed_branch = head, p.branch
    return await _done(run, wording.MERGED_CLEANLY.format(base=p.base, base_sha=p.base_sha[:7],
                                                          head=head[:7]))


async def _done(run: Run, text: str) -> JobResult:
    """A /rebase that needed no agent: said in the status comment and on the check run."""
    await close_check(run, "neutral", "Merged the base branch", text)
    record = run.record
    record.summary, record.delivery.final_stage, record.delivery.final_detail = \
        text, "done", text
    await run.stage("done", text)
    return JobResult(text, record)


async def both_sides(co: Checkout, base: str, files: list[str]) -> list[dict[str, str]]:
    """For each conflicted file: what the branch changed and what the base changed since
    they parted (diffs from their merge base), each capped."""
    fork = (await co.git("merge-base", "HEAD", f"refs/remotes/origin/{base}")).strip()
    out = []
    for path in files:
        ours = await co.git("diff", *NO_DRIVERS, fork, "HEAD", "--", path)
        theirs = await co.git("diff", *NO_DRIVERS, fork, f"refs/remotes/origin/{base}", "--",
                              path)
        out.append({"path": path, "ours": ours[:MAX_SIDE], "theirs": theirs[:MAX_SIDE]})
    return out
