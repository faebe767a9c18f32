"""The job runner: from a claimed job to a pull request, a commit, or a stated failure. It only
sequences the steps (prepare, setup, work, delivery) and hands GitHub writes to the reporter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bot.config import Settings
from bot.executor.agent.budget import Spend
from bot.executor.agent.loop import AgentResult
from bot.executor.briefing import write_spec
from bot.executor.changes import FileChange, changed_files, refusal
from bot.executor.delivery import (
    carried_over,
    commit,
    commit_title,
    keep_work,
    kept_commit,
    push,
    pushed_before,
    unopened_push,
)
from bot.executor.gitops import Checkout, GitError, unreachable
from bot.executor.iterations import earlier, entry, total_spend
from bot.executor.prepare import prepare
from bot.executor.run import Run, finish_despite_cancel
from bot.executor.sandbox import Backend, SandboxError
from bot.executor.setup import start_sandbox
from bot.executor.spec import Templates
from bot.executor.testrun import discover, not_run
from bot.executor.verdict import Verdict
from bot.executor.work import baseline, judge, run_agent
from bot.executor.workspace import Workspaces
from bot.github.client import GitHubApiError, GitHubApp
from bot.jobs.budgets import Budgets, OverBudget
from bot.jobs.states import Failure
from bot.jobs.store import Job, LeaseLost, Store, is_full
from bot.jobs.worker import JobDeferred, JobFailed, JobResult
from bot.reporter import wording
from bot.reporter.conversation import Conversation
from bot.reporter.markdown import inline
from bot.reporter.pull_request import Delivered, PullRequestWriter
from bot.reporter.report import shorten

log = logging.getLogger("handoff.executor")


class JobRunner:
    """Runs implement, retry and review jobs end to end."""

    def __init__(self, settings: Settings, store: Store, github: GitHubApp, backend: Backend,
                 conversation: Conversation) -> None:
        self.settings, self.store, self.github, self.backend = settings, store, github, backend
        self.conversation = conversation
        self.templates = Templates(settings.prompts_dir)
        self.workspaces = Workspaces(settings.data_dir)

    async def run(self, job: Job) -> JobResult:
        if job.installation_id is None:
            raise JobFailed(Failure.SETUP_FAILED, wording.NO_INSTALLATION)
        run = Run(job, self.github.repo(job.installation_id, job.repo), self.store,
                  job.result.model_copy(deep=True))
        goes_on = False  # the job is not over: its kept commit stays for the next attempt
        try:
            return await self._run(run)
        except JobFailed as exc:
            exc.result = exc.result or run.record
            raise
        except GitHubApiError as exc:
            goes_on = exc.retry_at is not None or exc.unavailable
            if exc.retry_at is not None:  # park the job; no worker sits waiting
                raise JobDeferred(exc.retry_at, str(exc), run.record) from exc
            if exc.unavailable:
                raise self._github_away(run, str(exc)) from exc
            raise JobFailed(Failure.GITHUB_ERROR, str(exc), run.record) from exc
        except GitError as exc:
            if goes_on := unreachable(exc):
                raise self._github_away(run, str(exc)) from exc
            if goes_on := is_full(exc):  # the worker defers it until there is space
                raise
            raise JobFailed(Failure.SETUP_FAILED, str(exc), run.record) from exc
        except SandboxError as exc:
            if goes_on := is_full(exc):
                raise
            raise JobFailed(Failure.SETUP_FAILED, str(exc), run.record) from exc
        except (asyncio.CancelledError, LeaseLost):
            goes_on = True  # handed back, or another worker has it now
            raise
        finally:
            await finish_despite_cancel(self._clean_up(run, forget=not goes_on))

    def _github_away(self, run: Run, why: str) -> JobDeferred:
        """GitHub did not answer past the retries: the job waits and goes on from where it
        was (its work kept), first after ``github_away_seconds``, doubling per deferral."""
        wait = min(600.0, self.settings.github_away_seconds * 2 ** run.job.deferrals)
        log.warning("job %s: GitHub did not answer; it goes on in %.0f s (%s)", run.job.id,
                    wait, why)
        return JobDeferred(time.time() + wait, f"GitHub did not answer: {why}", run.record,
                           stage="github-away")

    async def _clean_up(self, run: Run, forget: bool) -> None:
        """Save what the job did and remove its sandbox and workspace, whatever happens (a
        lost lease refuses the save; the sandbox goes all the same); once the job is over,
        its kept commit goes too."""
        try:
            await run.save()
        except LeaseLost:
            pass
        except Exception as exc:
            if not is_full(exc):
                raise
            # The job ends or stops all the same; what its last step did is not kept.
            log.error("job %s: could not save its record, the disk is full (%s)", run.job.id,
                      exc)
        finally:
            if run.sandbox is not None:
                await run.sandbox.close()
            self.workspaces.remove(run.job.id)
            if forget and run.record.kept_sha:
                with contextlib.suppress(GitError):
                    await self.workspaces.forget(run.job.id, run.job.repo)

    async def _run(self, run: Run) -> JobResult:
        if why := await self.conversation.not_permitted(run.job, run.gh):
            raise JobFailed(Failure.NOT_PERMITTED, why)
        run.mark("permission")
        try:
            run.dollars_left = await Budgets(self.store.engine).check(
                run.job.id, run.job.repo, run.job.requested_by)
        except OverBudget as exc:
            raise JobFailed(Failure.MONTHLY_BUDGET, str(exc)) from exc
        run.status = await self.conversation.acknowledge(run.gh, run.job, run.record)
        resumed = run.job.attempts > 1 or run.job.stage not in ("", "queued", "rate-limited",
                                                                "github-away")
        await run.stage("preparing", self.conversation.resumed(run.job.stage) if resumed else "")
        co = await prepare(run, self.workspaces, self.templates.names(),
                           self.settings.trigger_label)
        if kept := await kept_commit(run, co):
            return await self._push_kept(run, co, kept)
        if resumed and (head := await pushed_before(run, co)):
            return await self._open_pushed(run, co, head, wording.RESUMED_AFTER_PUSH.format(
                head=head[:7]))
        if earlier := await unopened_push(run, co, self.settings):
            run.record = carried_over(run.record, earlier.result)
            return await self._open_pushed(run, co, run.start_sha, wording.EARLIER_PUSH.format(
                job=earlier.id, head=run.start_sha[:7]))
        await start_sandbox(run, co, self.backend, self.workspaces, self.settings)
        outcome = await self._work(run, co)
        return await self._deliver(run, co, outcome)

    async def _work(self, run: Run, co: Checkout) -> AgentResult:
        """The baseline tests (beside the agent, or before it after a setup), the agent, then
        the tests again and the verdict."""
        tests = await discover(co, run.record.base_sha, run.config.test_command)
        run.record.test_command = tests.command if tests else ""
        run.record.test_command_reason = tests.reason if tests else ""
        # The copy the baseline runs on beside the agent is taken before the agent (or a
        # resumed job's restored work tree) changes anything.
        copy = await asyncio.to_thread(self.workspaces.snapshot, run.job.id) \
            if tests and not run.record.setup_command else None
        before = asyncio.ensure_future(baseline(run, tests.command, self.backend,
                                                self.workspaces, copy)) if tests else None
        try:
            if run.record.setup_command and before is not None:
                await asyncio.shield(before)
            spec = await write_spec(run, self.templates, self.store,
                                    self.settings.template_labels)
            outcome = await run_agent(run, spec, self.settings)
            report = await before if before is not None else not_run()
        finally:
            if before is not None and not before.done():
                before.cancel()
                await asyncio.gather(before, return_exceptions=True)
        await judge(run, tests, report, self.store)
        return outcome

    async def _deliver(self, run: Run, co: Checkout, outcome: AgentResult) -> JobResult:
        """Check the change, push it, and open or update the pull request."""
        files = await changed_files(co, run.start_sha)
        if not outcome.finished:
            await keep_work(run, files, outcome, self.settings)
            raise JobFailed(outcome.category, outcome.stop_reason)
        if not files:
            raise JobFailed(Failure.NO_CHANGES, wording.NO_CHANGES.format(
                summary=inline(shorten(outcome.summary, 500))))
        if why := await refusal(co, run.start_sha, files):
            raise JobFailed(Failure.PUSH_REFUSED, why)
        await run.stage("pushing")
        head = await commit(run, co, self.settings, commit_title(run))
        await self._keep(run, co, head)
        await push(run, co)
        run.record.head_sha, run.record.pushed_branch = head, run.record.branch
        await run.save()  # a job resumed after this finds its commit and opens the PR
        run.mark("push")
        return await self._open_pr(run, files, outcome.spend.line())

    async def _keep(self, run: Run, co: Checkout, head: str) -> None:
        """Keep the commit on this machine before pushing it, so that if GitHub does not take
        it now (or the worker stops), the job goes on later without running the agent."""
        try:
            await self.workspaces.keep(run.job.id, run.job.repo, co, head)
        except GitError as exc:
            log.warning("job %s: could not keep commit %s (%s)", run.job.id, head[:7], exc)
            return
        run.record.kept_sha = head
        await run.save()

    async def _push_kept(self, run: Run, co: Checkout, kept: str) -> JobResult:
        """Go on from a commit an earlier attempt made and kept: push it (unless it is on
        the branch already) and open the pull request."""
        said = wording.RESUMED_AFTER_PUSH
        if kept != run.start_sha:
            said = wording.RESUMED_WITH_COMMIT
            await co.git("reset", "--quiet", "--hard", kept)
            await push(run, co)
        return await self._open_pushed(run, co, kept, said.format(head=kept[:7]))

    async def _open_pushed(self, run: Run, co: Checkout, head: str, detail: str) -> JobResult:
        """Go on from a push made already (an earlier attempt's, or an earlier job's whose
        pull request could not be opened): open the pull request for it."""
        log.info("job %s: %s is pushed already; opening the pull request", run.job.id,
                 head[:7])
        run.record.head_sha, run.record.pushed_branch = head, run.record.branch
        await run.stage("pushing", detail)
        fork = (await co.git("merge-base", "HEAD", f"refs/remotes/origin/{run.base}")).strip()
        spend = Spend.saved(run.record.spend)
        return await self._open_pr(run, await changed_files(co, fork), spend.line())

    async def _open_pr(self, run: Run, files: list[FileChange], spend_line: str) -> JobResult:
        """After the push (``record.head_sha``): the pull request, the review summary, the
        check run, and the status comment's last word."""
        assert run.inputs is not None
        record, writer = run.record, PullRequestWriter(run.gh, self.templates,
                                                       self.settings.public_url)
        verdict = Verdict(**record.verdict)
        history, _ = await earlier(self.store, run.job)
        record.iterations = history + [entry(run.job, record, verdict.evidence)]
        delivered = Delivered(run.job, record, run.inputs, run.issue["title"], files)
        draft = self.settings.draft_prs if run.config.draft is None else run.config.draft
        pr = await writer.pull_request(delivered, verdict, record.iterations,
                                       total_spend(record.iterations), draft)
        record.pr_number, record.pr_url = pr["number"], pr["html_url"]
        await run.write(pr_number=pr["number"])
        await writer.review_summary(pr["number"], files, verdict)
        if run.job.kind == "review":
            await writer.answer_review(delivered)
        await writer.check_run(delivered, verdict)
        run.mark("pr")
        record.final_stage = verdict.stage
        record.final_detail = writer.done(pr["html_url"], verdict, spend_line)
        await run.stage(verdict.stage, record.final_detail)
        return JobResult(record.summary, record)
