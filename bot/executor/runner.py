"""The job runner: from a claimed job to a pull request, a commit, or a stated failure. It only
sequences the steps (prepare, sandbox, spec, agent, judge, deliver), handing each step's typed
result to the next as arguments and recording it in the job's record (``result.record(...)``,
saved by ``Run``'s lease-checked writes; no step reads it back), and hands GitHub writes to
the reporter."""

from __future__ import annotations

import asyncio
import logging

from bot.config import Settings
from bot.executor import ci, volume
from bot.executor.briefing import write_spec
from bot.executor.changes import changed_files
from bot.executor.delivery import (
    carried_over,
    deliver,
    kept_commit,
    push_kept,
    pushed_before,
    unopened_push,
)
from bot.executor.discovery import discover
from bot.executor.iterations import earlier, entry, total_spend
from bot.executor.outcomes import STEP_FAILURES, clean_up, outcome_of
from bot.executor.prepare import prepare
from bot.executor.progress import open_check
from bot.executor.rebase import merge_base_branch
from bot.executor.run import Run, finish_despite_cancel
from bot.executor.sandbox import Backend
from bot.executor.setup import start_sandbox
from bot.executor.steps import Judged, Prepared, Ran, Sandboxed
from bot.executor.testrun import not_run
from bot.executor.work import baseline, judge, run_agent
from bot.executor.workspace import Workspaces
from bot.github.client import GitHubApp
from bot.jobs.budgets import Budgets
from bot.jobs.changes import FileChange
from bot.jobs.cifix import CIRound
from bot.jobs.outcome import WAITING_FOR_CHECKS, JobFailed, JobResult
from bot.jobs.spend import Spend
from bot.jobs.states import Failure
from bot.jobs.store import Job, LeaseLost, Leases
from bot.jobs.verdict import Verdict
from bot.reporter import wording
from bot.reporter.conversation import Conversation
from bot.reporter.pull_request import Delivered, PullRequestWriter
from bot.reporter.templates import Templates
from handlers.vocabulary import CI_FIX

log = logging.getLogger("handoff.executor")


class JobRunner:
    """Runs implement, retry and review jobs end to end."""

    def __init__(self, settings: Settings, store: Leases, github: GitHubApp, backend: Backend,
                 conversation: Conversation) -> None:
        self.settings, self.store, self.github, self.backend = settings, store, github, backend
        self.conversation = conversation
        self.templates = Templates(settings.prompts_dir)
        self.workspaces = Workspaces(settings.data_dir, volume.wanted_mb(settings))

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
        except (asyncio.CancelledError, LeaseLost):
            goes_on = True  # handed back, or another worker has it now
            raise
        except STEP_FAILURES as exc:
            instead, goes_on = outcome_of(exc, run, self.settings)
            if instead is None:
                raise
            raise instead from exc
        finally:
            await finish_despite_cancel(clean_up(run, self.workspaces, forget=not goes_on))

    async def _run(self, run: Run) -> JobResult:
        if why := await self.conversation.not_permitted(run.job, run.gh):
            raise JobFailed(Failure.NOT_PERMITTED, why)
        run.mark("permission")
        dollars_left = await Budgets(self.store.engine).check(run.job.id, run.job.repo,
                                                              run.job.requested_by)
        fix: CIRound | None = None  # a CI fix's round: the failing checks it fixes
        if run.job.kind == CI_FIX:
            found = await ci.examine(run, self.templates, self.settings.bot_login.removesuffix(
                "[bot]"), self.settings.ci_hold_seconds)
            if isinstance(found, JobResult):
                return found  # nothing of the commit's checks to fix: no comment, no push
            fix = run.record.ci = found
            run.mark("checks")
        run.status = await self.conversation.acknowledge(run.gh, run.job, run.record)
        run.record.acknowledged = True
        resumed = run.job.attempts > 1 or run.job.stage not in (
            "", "queued", "rate-limited", "github-away", WAITING_FOR_CHECKS)
        await run.stage("preparing", self.conversation.resumed(run.job.stage) if resumed else "")
        p = await prepare(run, self.workspaces, self.templates.names(),
                          self.settings.trigger_label)
        p.record(run.record)
        await open_check(run, p, self.settings.public_url)
        stored = run.job.result  # what an earlier attempt of this job left
        if kept := await kept_commit(run, p, stored.delivery.kept_sha):
            return await self._open_pushed(run, p, kept, await push_kept(run, p, kept))
        if resumed and (head := await pushed_before(run, p, stored.summary)):
            return await self._open_pushed(run, p, head, wording.RESUMED_AFTER_PUSH.format(
                head=head[:7]))
        if earlier := await unopened_push(run, p, self.settings):
            run.record = carried_over(run.record, earlier.result)
            return await self._open_pushed(run, p, p.start_sha, wording.EARLIER_PUSH.format(
                job=earlier.id, head=p.start_sha[:7]))
        conflicts: list[str] = []  # a /rebase's, for the agent to resolve
        if run.job.kind == "rebase":
            merged = await merge_base_branch(run, p, self.settings)
            if isinstance(merged, JobResult):
                return merged  # merged cleanly, or nothing to merge
            conflicts = run.record.inputs.conflicts = merged
        sb = await start_sandbox(run, p, self.backend, self.workspaces, self.settings)
        ran, judged = await self._work(run, p, sb, dollars_left, fix, conflicts)
        pushed = await deliver(run, p, ran.outcome, self.settings, self.workspaces, conflicts)
        return await self._open_pr(run, p, pushed.files, judged.verdict,
                                   ran.outcome.spend.line())

    async def _work(self, run: Run, p: Prepared, sb: Sandboxed, dollars_left: float | None,
                    fix: CIRound | None, conflicts: list[str]) -> tuple[Ran, Judged]:
        """The tests before (beside the agent, or first after a setup), agent, tests, verdict."""
        tests = await discover(p.checkout, p.base_sha, p.config.test_command)
        run.record.tests.command = tests.command if tests else ""
        run.record.tests.command_reason = tests.reason if tests else ""
        # The copy the baseline runs on beside the agent: the start commit, from git objects.
        copy = await self.workspaces.snapshot(p.checkout, run.job.id, p.branch, p.base,
                                              p.base_sha, p.start_sha) \
            if tests and not sb.setup else None
        before = asyncio.ensure_future(baseline(run, p, sb, tests.command, self.backend,
                                                self.workspaces, copy)) if tests else None
        try:
            known = None  # after a setup, the spec states how the tests ended before
            if sb.setup and before is not None:
                known = await asyncio.shield(before)
            brief = await write_spec(run, p, self.templates, self.store,
                                     self.settings.template_labels, tests, known, fix,
                                     conflicts)
            brief.record(run.record, p.inputs)
            ran = await run_agent(run, p, sb.sandbox, brief.spec, self.settings, dollars_left)
            ran.record(run.record)
            report = await before if before is not None else not_run()
        finally:
            if before is not None and not before.done():
                before.cancel()
                await asyncio.gather(before, return_exceptions=True)
        judged = await judge(run, sb.sandbox, tests, report, self.store, brief.template,
                             ran.transcript, sb.warning)
        judged.record(run.record)
        return ran, judged

    async def _open_pushed(self, run: Run, p: Prepared, head: str, detail: str) -> JobResult:
        """Go on from a push made already (an earlier attempt's, or an earlier job's whose
        pull request could not be opened): open the pull request for it."""
        log.info("job %s: %s is pushed already; opening the pull request", run.job.id,
                 head[:7])
        run.record.delivery.head_sha, run.record.delivery.pushed_branch = head, p.branch
        await run.stage("pushing", detail)
        fork = (await p.checkout.git("merge-base", "HEAD", f"refs/remotes/origin/{p.base}")
                ).strip()
        # What the attempt (or the earlier job) that pushed it recorded.
        spend = Spend.saved(run.record.agent.spend)
        verdict = run.record.verdict
        assert verdict is not None  # judged before its commit was made
        return await self._open_pr(run, p, await changed_files(p.checkout, fork), verdict,
                                   spend.line())

    async def _open_pr(self, run: Run, p: Prepared, files: list[FileChange], verdict: Verdict,
                       spend_line: str) -> JobResult:
        """After the push (``record.delivery.head_sha``): the pull request, the review summary, the
        check run, and the status comment's last word."""
        record, writer = run.record, PullRequestWriter(run.gh, self.templates,
                                                       self.settings.public_url)
        history, _ = await earlier(self.store, run.job)
        record.iterations = history + [entry(run.job, record, verdict.evidence)]
        delivered = Delivered(run.job, record, p.inputs, p.issue["title"], files)
        draft = self.settings.draft_prs if p.config.draft is None else p.config.draft
        pr = await writer.pull_request(delivered, verdict, record.iterations,
                                       total_spend(record.iterations), draft)
        record.delivery.pr_number, record.delivery.pr_url = pr["number"], pr["html_url"]
        await run.write(pr_number=pr["number"])
        await writer.review_summary(pr["number"], files, verdict)
        if record.inputs.review_threads:
            await writer.answer_review(delivered)
        record.delivery.check_run_id = await writer.check_run(delivered, verdict, p.start_sha)
        record.delivery.check_run_open = False
        run.mark("pr")
        record.delivery.final_stage = verdict.stage
        record.delivery.final_detail = writer.done(pr["html_url"], verdict, spend_line)
        await run.stage(verdict.stage, record.delivery.final_detail)
        return JobResult(record.summary, record)
