"""The engine's job runner: from a claimed job to a pull request, a commit, or a stated failure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot import logs, metrics
from bot.config import Settings
from bot.executor.agent.budget import Budget, Spend
from bot.executor.agent.external import ExternalAgent
from bot.executor.agent.loop import Agent, AgentResult
from bot.executor.agent.models import make_model
from bot.executor.agent.transcript import Transcript
from bot.executor.changes import FileChange, changed_files, refusal, review_notes
from bot.executor.dependencies import Setup, default_setup
from bot.executor.gitops import NO_DRIVERS, Checkout, GitError
from bot.executor.iterations import earlier, total_spend
from bot.executor.iterations import entry as iteration_entry
from bot.executor.repo_config import CONFIG_PATH, RepoConfig, RepoConfigError, parse_repo_config
from bot.executor.sandbox import Backend, CommandResult, Sandbox, SandboxError
from bot.executor.spec import (
    SpecInputs,
    Templates,
    build_inputs,
    choose_template,
    repo_instructions,
    strip_hidden,
)
from bot.executor.testrun import TestReport, discover, last_line, not_run, run_tests
from bot.executor.verdict import NO_EVIDENCE_NEEDED, Verdict, decide, last_failed_check
from bot.executor.workspace import SANDBOX_OBJECTS, Workspaces
from bot.github.client import WRITE_ROLES, GitHubApiError, GitHubApp, RepoClient
from bot.jobs.states import Failure
from bot.jobs.store import Job, LeaseLost, Store
from bot.jobs.worker import JobDeferred, JobFailed, JobResult
from bot.prices import price_for
from bot.receiver.decisions import AGENT_BRANCH_PREFIX
from bot.reporter.report import shorten
from bot.reporter.status import STAGES, StatusComment, job_url

log = logging.getLogger("handoff.pipeline")
RESUMED = ("Resumed: the attempt before stopped at “{stage}” (its worker stopped or was lost); "
           "this attempt goes on from what was saved.")
QUEUED = "Position {position} in the queue; it starts when a worker is free."
ALREADY_UNDER_WAY = ("@{login}, Handoff's job {job} already has this ({state}), so no second job "
                     "starts. Its status comment follows it; `/cancel` stops it, and `/retry "
                     "<feedback>` on its pull request asks for another iteration.")
CANCEL_REFUSED = ("@{login}, only people with write access to {repo} can cancel Handoff's "
                  "work (you have {role} access), so the job goes on. A maintainer can "
                  "cancel it with `/cancel`.")


def slug(title: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return words[:40].rstrip("-") or "work"


def test_line(result: CommandResult | None) -> str:
    """A one-line account of a command's run: its verdict and last line of output (progress
    dots left out)."""
    if result is None:
        return not_run().line()
    last = last_line(result.stdout + "\n" + result.stderr)
    verdict = "pass" if result.ok else ("timed out" if result.timed_out else "fail")
    return f"{verdict} — {last}" if last else verdict


@dataclass
class Run:
    """The state of one job as the pipeline works through it."""

    job: Job
    gh: RepoClient
    result: dict[str, Any] = field(default_factory=dict)
    status: StatusComment | None = None
    sandbox: Sandbox | None = None
    checkout: Checkout | None = None
    clone_url: str = ""
    config: RepoConfig = field(default_factory=RepoConfig)
    issue: dict[str, Any] = field(default_factory=dict)
    base: str = ""
    inputs: SpecInputs | None = None
    start_sha: str = ""
    before: CommandResult | None = None
    last_mark: float = field(default_factory=time.monotonic)

    @property
    def issue_number(self) -> int:
        return self.job.issue_number

    @property
    def target(self) -> int:
        return self.job.target

    def mark(self, stage: str) -> None:
        """Record how long the stage that just ended took (``result["timings"]``)."""
        now = time.monotonic()
        self.result.setdefault("timings", {})[stage] = round(now - self.last_mark, 3)
        metrics.STAGE_SECONDS.labels(stage).observe(now - self.last_mark)
        self.last_mark = now


class Pipeline:
    """Runs implement, retry and review jobs end to end."""

    def __init__(self, settings: Settings, store: Store, github: GitHubApp, backend: Backend,
                 status_interval: float = 5.0) -> None:
        self.settings, self.store, self.github, self.backend = settings, store, github, backend
        self.templates = Templates(settings.prompts_dir)
        self.workspaces = Workspaces(settings.data_dir)
        self.status_interval = status_interval

    # -- entry points --------------------------------------------------------------------------

    async def announce(self, job: Job, position: int) -> None:
        """A job waits behind others: react and say where it stands, and again when its
        place changes; for people with write access only."""
        if job.installation_id is None:
            return
        gh = self.github.repo(job.installation_id, job.repo)
        if await gh.permission(job.requested_by) not in WRITE_ROLES:
            return  # the polite refusal comes when the job runs
        run = Run(job, gh, result=dict(job.result))
        await self._acknowledge(run)
        assert run.status is not None
        await run.status.set("queued", QUEUED.format(position=position), force=True)
        await self.store.update_queued(job.id, result={
            **job.result, "announced": True, "position": position, "acknowledged": True,
            "status_comment_id": run.status.comment_id})

    async def answer(self, request: dict[str, Any]) -> None:
        """Answer a trigger or command that reached a job under way: a reaction, and for a
        second trigger a line saying which job has it (a /cancel is answered by its result)."""
        job = await self.store.get_job(int(request["job_id"]))
        if job is None or job.installation_id is None:
            return
        gh = self.github.repo(job.installation_id, job.repo)
        if request["comment_id"]:
            await gh.react_comment(int(request["comment_id"]))
        if request["kind"] == "trigger":
            await gh.create_comment(int(request["number"]), ALREADY_UNDER_WAY.format(
                login=request["requested_by"], job=job.id, state=job.state))

    async def may_cancel(self, job: Job) -> bool:
        """Whether the author of a /cancel may stop this job; a polite answer if not."""
        if job.installation_id is None or not job.cancel_by:
            return False
        gh = self.github.repo(job.installation_id, job.repo)
        role = await gh.permission(job.cancel_by)
        if role in WRITE_ROLES:
            return True
        await gh.create_comment(job.target, CANCEL_REFUSED.format(
            login=job.cancel_by, role=role, repo=job.repo))
        return False

    async def run(self, job: Job) -> JobResult:
        if job.installation_id is None:
            raise JobFailed(Failure.SETUP_FAILED, "the delivery named no installation of the App")
        gh = self.github.repo(job.installation_id, job.repo)
        run = Run(job, gh, result=dict(job.result))
        try:
            return await self._run(run)
        except JobFailed as exc:
            exc.result = {**run.result, **exc.result}
            raise
        except GitHubApiError as exc:
            if exc.retry_at is not None:  # park the job; no worker sits waiting
                raise JobDeferred(exc.retry_at, str(exc), run.result) from exc
            raise JobFailed(Failure.GITHUB_ERROR, str(exc), run.result) from exc
        except (SandboxError, GitError) as exc:
            raise JobFailed(Failure.SETUP_FAILED, str(exc), run.result) from exc
        finally:
            await finish_despite_cancel(self._clean_up(run))

    async def _clean_up(self, run: Run) -> None:
        """Save what the job did and remove its sandbox and workspace, whatever happens (a
        lost lease refuses the save; the sandbox goes all the same)."""
        try:
            with contextlib.suppress(LeaseLost):
                await self._save(run)
        finally:
            if run.sandbox is not None:
                await run.sandbox.close()
            self.workspaces.remove(run.job.id)

    async def _write(self, run: Run, **columns: Any) -> None:
        """Every write of a running job checks its lease token (LeaseLost if it is gone)."""
        await self.store.update_held(run.job.id, run.job.lease_token, **columns)

    async def _save(self, run: Run, **columns: Any) -> None:
        await self._write(run, result=run.result, **columns)

    async def _stage(self, run: Run, stage: str, detail: str = "", force: bool = True) -> None:
        logs.enter_stage(stage)  # logged; and every line after, in this job, names it
        if run.status is not None:
            await run.status.set(stage, detail, force=force)
            run.result["status_comment_id"] = run.status.comment_id
        # Saved at every stage, so a job taken over after a crash keeps its status comment.
        await self._write(run, stage=stage, result=run.result)

    async def handed_back(self, job: Job) -> None:
        """The worker stopped (a restart, a deploy) and handed the job back: say so."""
        if job.installation_id is None or not job.result.get("status_comment_id"):
            return
        gh = self.github.repo(job.installation_id, job.repo)
        status = StatusComment(gh, job.target, job.id, 0, job.result["status_comment_id"],
                               job_url(self.settings.public_url, job.id))
        await status.set("paused", "The worker running this job was stopped (a restart or a "
                         "deploy). The job is back in the queue and resumes when a worker is "
                         "free; this does not count as a failed attempt.", force=True)

    # -- the path of one job ------------------------------------------------------------------

    async def _run(self, run: Run) -> JobResult:
        await self._check_permission(run)
        await self._acknowledge(run)
        resumed = run.job.attempts > 1 or run.job.stage not in ("", "queued", "rate-limited")
        await self._stage(run, "preparing", RESUMED.format(
            stage=STAGES.get(run.job.stage, run.job.stage or "queued")) if resumed else "")
        co = await self._prepare_workspace(run)
        if resumed and (head := await self._pushed_before(run, co)):
            return await self._open_pushed(run, co, head)
        await self._start_sandbox(run, co)
        outcome = await self._work(run)
        return await self._deliver(run, co, outcome)

    async def _check_permission(self, run: Run) -> None:
        if why := await self.not_permitted(run.job):
            raise JobFailed(Failure.NOT_PERMITTED, why)
        run.mark("permission")

    async def not_permitted(self, job: Job) -> str:
        """Why the person who asked for this job may not (no write access), or ""."""
        if job.installation_id is None:
            return ""  # the run says what is wrong with the delivery
        gh = self.github.repo(job.installation_id, job.repo)
        role = await gh.permission(job.requested_by)
        if role in WRITE_ROLES:
            return ""
        return (f"@{job.requested_by} has {role} access to {job.repo}; Handoff takes work only "
                "from people with write access")

    async def _prepare_workspace(self, run: Run) -> Checkout:
        """Check out the branch; read the repository's settings and the spec's inputs from
        git objects of the default branch, never from files the agent may have written."""
        job, gh = run.job, run.gh
        run.issue = await gh.get_issue(run.issue_number)
        repo = await gh.get_repo()
        run.base = str(repo["default_branch"])
        branch = job.branch or \
            f"{AGENT_BRANCH_PREFIX}{run.issue_number}-{slug(run.issue['title'])}"
        run.result.update(branch=branch, base=run.base)
        await self._write(run, branch=branch)
        run.clone_url = str(repo["clone_url"])
        co = run.checkout = await self.workspaces.checkout(
            job.id, job.repo, branch, run.base, run.clone_url, await gh.token())
        run.mark("workspace")
        base_sha = run.result["base_sha"] = await co.rev(f"refs/remotes/origin/{run.base}")
        run.start_sha = await co.rev("HEAD")
        run.config = await self._config(co, base_sha)
        comments = await gh.list_comments(run.issue_number)
        writers = await self._writers(gh, comments)
        left_out = await self._approved_issue(run)
        run.inputs = build_inputs(job.repo, run.issue, comments, writers,
                                  self.settings.trigger_label,
                                  await repo_instructions(co, base_sha))
        run.inputs.excluded += left_out
        run.mark("spec inputs")
        return co

    async def _start_sandbox(self, run: Run, co: Checkout) -> None:
        """Start the sandbox and run the setup (egress to allowed hosts only): the configured
        one, else an install of the dependencies the repository declares."""
        config, s = run.config, self.settings
        setup = Setup(config.setup_command, "set as `setup_command` in `.github/handoff.yml`") \
            if config.setup_command else None
        if config.setup_command is None:
            setup = await default_setup(co, str(run.result["base_sha"]))
        run.result.update(setup_command=setup.command if setup else "",
                          setup_reason=setup.reason if setup else "")
        egress = [*s.egress_allow, *config.network.allow, *s.package_index_hosts()] \
            if setup else []
        mirror = self.workspaces.mirror_path(run.job.repo) / "objects"
        run.sandbox = await self.backend.start(run.job.id, co.work_tree, egress=egress,
                                               image=config.image,
                                               owner=run.job.lease_owner or "",
                                               mounts=[(mirror, SANDBOX_OBJECTS)])
        run.mark("sandbox")
        if setup is None:
            return
        await self._stage(run, "setup", f"Installing: `{setup.command}`")
        done = await run.sandbox.exec(setup.command, env=s.package_index_env() or None)
        self._check_limits(run)
        await run.sandbox.set_egress([])
        await self._keep_out_of_changes(co)
        run.mark("setup")
        if done.ok:
            return
        why = f"`{setup.command}` ended with {done.describe()}: {test_line(done)}"
        if config.setup_command:
            raise JobFailed(Failure.SETUP_FAILED, f"the setup command {why}")
        # A guessed setup that fails does not stop the job: the PR says so, and the tests
        # before and after tell what it cost.
        run.result["setup_warning"] = f"the dependencies could not be installed: {why}"

    async def _keep_out_of_changes(self, co: Checkout) -> None:
        """What the setup left in the work tree (``node_modules/``, ``*.egg-info``, a
        virtualenv) is no part of the agent's change: excluded in the trusted git directory."""
        made = await co.git("ls-files", "--others", "--exclude-standard", "--directory", "-z")
        paths = [p for p in made.split("\0") if p]
        if paths:
            (co.git_dir / "info").mkdir(exist_ok=True)
            with (co.git_dir / "info" / "exclude").open("a") as exclude:
                exclude.writelines("/" + re.sub(r"([\\*?\[\]!#])", r"\\\1", p) + "\n"
                                   for p in paths)

    def _check_limits(self, run: Run, box: Sandbox | None = None) -> None:
        """Record refused egress; a command stopped by the disk limit ends the job."""
        box = box or run.sandbox
        assert box is not None
        if box is run.sandbox:
            run.result["egress_denied"] = box.egress_denied
        if (hit := box.limit_hit) is not None:
            raise JobFailed(hit.limit or "sandbox-limit", hit.describe())

    async def _tests_before(self, run: Run, command: str) -> TestReport:
        """The baseline run. Without a setup command it runs in a second sandbox over a copy
        of the untouched work tree, beside the agent (the suite is most of a job's time on
        real repositories); after a setup, in the job's own sandbox first, where the setup's
        installs are."""
        assert run.sandbox is not None and run.checkout is not None
        if run.result.get("setup_command"):
            await self._stage(run, "baseline")
            report = await run_tests(run.sandbox, command, "before")
            self._check_limits(run)
            return report
        started = time.monotonic()
        copy = await asyncio.to_thread(self.workspaces.snapshot, run.job.id)
        mirror = self.workspaces.mirror_path(run.job.repo) / "objects"
        box = await self.backend.start(f"{run.job.id}-baseline", copy,
                                       image=run.config.image,
                                       owner=run.job.lease_owner or "",
                                       mounts=[(mirror, SANDBOX_OBJECTS)])
        try:
            report = await run_tests(box, command, "before")
            self._check_limits(run, box)
        finally:
            await finish_despite_cancel(box.close())
        run.result.setdefault("timings", {})["baseline tests (beside the agent)"] = \
            round(time.monotonic() - started, 3)
        return report

    async def _work(self, run: Run) -> AgentResult:
        """The baseline tests, the agent's run, then the tests again and the verdict."""
        assert run.sandbox is not None and run.checkout is not None
        tests = await discover(run.checkout, str(run.result["base_sha"]), run.config.test_command)
        run.result.update(test_command=tests.command if tests else "",
                          test_command_reason=tests.reason if tests else "")
        baseline_run = asyncio.ensure_future(self._tests_before(run, tests.command)) \
            if tests else None
        try:
            if run.result.get("setup_command") and baseline_run is not None:
                await asyncio.shield(baseline_run)  # in the job's sandbox: before the agent
            spec = await self._spec(run)
            await self._stage(run, "agent", "Starting the agent")
            agent = self._agent(run)
            if isinstance(agent, ExternalAgent):  # it calls its model itself: that host only
                url = urlsplit(self.settings.model_base_url)
                await run.sandbox.set_egress([f"{url.hostname}:{url.port}" if url.port
                                              else str(url.hostname)])
            outcome = await agent.run(spec, run.sandbox)
            await run.sandbox.set_egress([])
            self._check_limits(run)
            run.result.update(spend=outcome.spend.as_dict(), summary=outcome.summary)
            run.mark("agent")
            before = await baseline_run if baseline_run is not None else not_run()
        finally:
            if baseline_run is not None and not baseline_run.done():
                baseline_run.cancel()
                await asyncio.gather(baseline_run, return_exceptions=True)
        run.result.update(tests_before=before.line(), tests_before_report=before.as_dict())
        history, first_baseline = await earlier(self.store, run.job)
        baseline = TestReport.from_dict(first_baseline)
        if baseline is None or baseline.command != before.command:
            baseline = before
        run.result["baseline_report"] = baseline.as_dict()
        run.result["tests_base"] = baseline.line()
        after = None
        if tests and before.state != "config-error":
            await self._stage(run, "testing")
            after = await run_tests(run.sandbox, tests.command, "after")
            self._check_limits(run)
        after_line = after.line() if after else \
            before.line() if before.state == "config-error" else not_run().line()
        run.result.update(tests_after=after_line,
                          tests_after_report=after.as_dict() if after else {})
        templates = [it.get("template", "") for it in history] + [run.result.get("template", "")]
        transcript = run.result.get("transcript")
        verdict = decide(baseline if tests else None, after,
                         prior_evidence=any(it.get("evidence") for it in history),
                         evidence_expected=not any(t in NO_EVIDENCE_NEEDED for t in templates),
                         last_failed_check=last_failed_check(Path(transcript)
                                                             if transcript else None))
        run.result.update(verdict=verdict.as_dict(), regression=verdict.regression)
        run.mark("tests after")
        return outcome

    async def _deliver(self, run: Run, co: Checkout, outcome: AgentResult) -> JobResult:
        """Check the change, push it, and open or update the pull request."""
        files = await changed_files(co, run.start_sha)
        if not outcome.finished:
            await self._keep_work(run, files, outcome)
            raise JobFailed(outcome.category, outcome.stop_reason)
        if not files:
            raise JobFailed(Failure.NO_CHANGES, "the agent finished without changing any file: "
                            f"{shorten(outcome.summary, 500)}")
        if why := await refusal(co, run.start_sha, files):
            raise JobFailed(Failure.PUSH_REFUSED, why)
        await self._stage(run, "pushing")
        title = (outcome.summary.splitlines() or ["Agent change"])[0][:72]
        head = await self._commit_and_push(run, co, str(run.result["branch"]), title)
        run.result.update(head_sha=head, pushed_branch=run.result["branch"])
        await self._save(run)  # a job resumed after this finds its commit and opens the PR
        run.mark("push")
        return await self._open_pr(run, files, outcome, head)

    async def _open_pr(self, run: Run, files: list[FileChange], outcome: AgentResult,
                       head: str) -> JobResult:
        """After the push: the pull request, the review summary, the check run, and the
        status comment's last word."""
        verdict = Verdict(**run.result["verdict"])
        pr = await self._pull_request(run, outcome, head)
        await self._review_summary(run, pr["number"], files, verdict)
        if run.job.kind == "review":
            await self._answer_review(run, outcome.summary)
        await self._check_run(run, head, verdict)
        run.mark("pr")
        detail = self.templates.render("status_done", pr_url=pr["html_url"], verdict=verdict,
                                       spend=outcome.spend.line()).strip()
        run.result.update(final_stage=verdict.stage, final_detail=detail)
        await self._stage(run, verdict.stage, detail)
        return JobResult(outcome.summary, run.result)

    async def _acknowledge(self, run: Run) -> None:
        if not run.result.get("acknowledged"):
            comment_id = run.job.context.get("comment_id")
            if comment_id:
                await run.gh.react_comment(int(comment_id))
            elif run.job.kind == "implement":
                await run.gh.react_issue(run.issue_number)
            run.result["acknowledged"] = True
        run.status = StatusComment(run.gh, run.target, run.job.id, self.status_interval,
                                   run.result.get("status_comment_id"),
                                   job_url(self.settings.public_url, run.job.id),
                                   announced=bool(run.result.get("announced")))

    async def _config(self, co: Checkout, base_sha: str) -> RepoConfig:
        try:
            return parse_repo_config(await co.read_blob(base_sha, CONFIG_PATH),
                                     self.templates.names())
        except RepoConfigError as exc:
            raise JobFailed(Failure.CONFIG_ERROR, str(exc)) from exc

    async def _approved_issue(self, run: Run) -> list[str]:
        """Use the issue as it was handed over, with later edits by writers only; returns
        the edits left out. (Jobs recorded before snapshots existed use the live text.)"""
        snap = run.job.context.get("issue_snapshot")
        if not snap:
            return []
        text, left_out = dict(snap), []
        for change in run.job.context.get("edits", []):
            if await run.gh.permission(change["by"]) in WRITE_ROLES:
                text = {"title": change["title"], "body": change["body"]}
            else:
                left_out.append(f"an edit of the issue by @{change['by']}")
        live = {"title": run.issue.get("title") or "", "body": run.issue.get("body") or ""}
        if live != text and not left_out:
            left_out.append("a change to the issue made after it was handed over, by someone "
                            "not confirmed as a writer")
        run.issue = {**run.issue, **text}
        run.result["issue_snapshot"] = text
        return left_out

    async def _writers(self, gh: RepoClient, comments: list[dict[str, Any]]) -> set[str]:
        authors = {str((c.get("user") or {}).get("login", "")) for c in comments}
        return {a for a in authors if a and await gh.permission(a) in WRITE_ROLES}

    async def _spec(self, run: Run) -> str:
        job, inputs, config, base = run.job, run.inputs, run.config, run.base
        assert inputs is not None
        mapping = {**self.settings.template_labels, **config.templates}
        common: dict[str, Any] = dict(test_command=run.result.get("test_command", ""),
                                      baseline=run.result.get("tests_before", "")
                                      if run.result.get("test_command") else "")
        run.result["inputs_seen"] = inputs.seen()
        run.result["inputs_excluded"] = inputs.excluded
        run.result["criteria"] = inputs.criteria
        if job.kind == "implement":
            name = choose_template(inputs.labels, mapping)
            if job.feedback:
                inputs.comments.append({"author": job.requested_by,
                                       "body": strip_hidden(job.feedback)})
            run.result["template"] = name
            return self.templates.spec(name, inputs, **common)
        assert run.checkout is not None
        diff = await run.checkout.git("diff", *NO_DRIVERS,
                                      f"refs/remotes/origin/{base}...{run.start_sha}")
        origin = await self.store.get_job(int(job.context.get("origin_job", 0) or 0))
        previous = (origin.result.get("summary", "") if origin else "") or \
            str(job.result.get("summary", ""))
        extra = dict(requested_by=job.requested_by, feedback=strip_hidden(job.feedback),
                     previous_summary=previous, diff=diff[:30_000], base_branch=base, **common)
        if job.kind == "review":
            assert job.pr_number is not None
            review_id = job.context.get("review_id")
            threads = [c for c in await run.gh.review_comments(job.pr_number)
                       if not c.get("in_reply_to_id") and
                       (review_id is None or c.get("pull_request_review_id") in (None, review_id)
                        ) and (c.get("user") or {}).get("login") == job.requested_by]
            run.result["review_threads"] = [c["id"] for c in threads]
            extra["review_comments"] = [{"path": c["path"], "line": c.get("line"),
                                         "author": c["user"]["login"],
                                         "body": strip_hidden(c["body"])}
                                        for c in threads]
        run.result["template"] = job.kind
        return self.templates.spec(job.kind, inputs, **extra)

    def _agent(self, run: Run) -> Agent | ExternalAgent:
        s, config = self.settings, run.config
        b = config.budget
        model_name = config.model or s.model_name
        price_in, price_out = price_for(model_name, s.prices)  # logs a model it has no price for
        budget = Budget(max_steps=b.max_steps or s.max_steps,
                        max_tokens=b.max_tokens or s.max_tokens,
                        max_cost_usd=b.max_cost_usd or s.max_cost_usd,
                        max_wall_seconds=b.max_wall_seconds or s.max_wall_seconds,
                        price_in=price_in, price_out=price_out)
        key = s.model_api_key.get_secret_value() if s.model_api_key else None
        transcript = Transcript(s.data_dir / "transcripts" / f"job-{run.job.id}.jsonl",
                                secrets=(key or "",))
        run.result["transcript"] = str(transcript.path)
        run.result["model"] = model_name
        if s.agent_command:
            return ExternalAgent(s.agent_command, s.agent_env, budget, transcript)
        model = make_model(s.model_provider, s.model_base_url, model_name, key, s.model_timeout)

        async def progress(spend: Spend) -> None:
            await self._write(run, result={**run.result, "spend": spend.as_dict()})
            if run.status:
                await run.status.agent_progress(spend)

        return Agent(model, budget, transcript, s.command_timeout, progress,
                     keep_observations=s.keep_observations)

    async def _commit_and_push(self, run: Run, co: Checkout, branch: str, title: str) -> str:
        job = run.job
        login = self.settings.bot_login
        message = (f"{title}\n\nHandoff job {job.id} for #{run.issue_number}.\n\n"
                   f"Co-authored-by: {job.requested_by} "
                   f"<{job.requested_by}@users.noreply.github.com>\n")
        await co.git("-c", f"user.name={login}", "-c",
                     f"user.email={self.settings.app_id}+{login}@users.noreply.github.com",
                     "commit", "--quiet", "--no-verify", "-m", message)
        await self._push(run, co, branch)
        return await co.rev("HEAD")

    async def _push(self, run: Run, co: Checkout, branch: str) -> None:
        # Never a force push: a person's commits on the branch are kept, and a rejected push
        # is a stated failure. Never a push without the lease: another worker may hold it.
        if not await self.store.holds(run.job.id, run.job.lease_token):
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
                raise JobFailed(Failure.PUSH_REFUSED, f"GitHub refused the push to `{branch}`: "
                                f"{text[-500:]}") from exc

    async def _pushed_before(self, run: Run, co: Checkout) -> str | None:
        """On a resumed job: the commit an earlier attempt pushed (found on the branch by its
        "Handoff job N" line), if it got as far as pushing."""
        if run.job.stage != "pushing" or not run.result.get("summary"):
            return None
        out = await co.git("log", "--format=%H", "--fixed-strings",
                           f"--grep=Handoff job {run.job.id} for #",
                           f"refs/remotes/origin/{run.base}..HEAD")
        return out.split()[0] if out.strip() else None

    async def _open_pushed(self, run: Run, co: Checkout, head: str) -> JobResult:
        """Go on from an earlier attempt's push: open the pull request for it."""
        log.info("job %s: resumed after its push (%s); opening the pull request", run.job.id,
                 head[:7])
        saved = run.result.get("spend") or {}
        spend = Spend(**{k: saved[k] for k in ("steps", "input_tokens", "output_tokens",
                                               "cost_usd") if k in saved})
        outcome = AgentResult(True, str(run.result["summary"]), "", spend)
        run.result.update(head_sha=head, pushed_branch=run.result["branch"])
        await self._stage(run, "pushing", f"Resumed: the change was pushed already (commit "
                          f"{head[:7]}); opening the pull request.")
        fork = (await co.git("merge-base", "HEAD", f"refs/remotes/origin/{run.base}")).strip()
        return await self._open_pr(run, await changed_files(co, fork), outcome, head)

    async def _keep_work(self, run: Run, files: list[FileChange],
                         outcome: AgentResult) -> None:
        """Push what the agent did so far as a work-in-progress commit, when it is safe."""
        assert run.checkout is not None
        if not files or await refusal(run.checkout, run.start_sha, files):
            return
        branch = str(run.result["branch"])
        with contextlib.suppress(JobFailed):
            head = await self._commit_and_push(
                run, run.checkout, branch, f"WIP: stopped early ({outcome.stop_reason})"[:72])
            run.result["wip_branch"] = branch
            run.result["head_sha"] = head

    async def _pull_request(self, run: Run, outcome: AgentResult, head: str) -> dict[str, Any]:
        gh, job, issue, inputs, base = run.gh, run.job, run.issue, run.inputs, run.base
        assert inputs is not None
        verdict = Verdict(**run.result["verdict"])
        history, _ = await earlier(self.store, job)
        iterations = history + [iteration_entry(job, run.result, verdict.evidence)]
        run.result["iterations"] = iterations
        body = self.templates.render(
            "summary", issue=inputs.issue, summary=outcome.summary, iterations=iterations,
            criteria=evidence_across(inputs.criteria, [it["summary"] for it in iterations]),
            base_sha=run.result["base_sha"], head_sha=head,
            tests_base=run.result["tests_base"], tests_before=run.result["tests_before"],
            tests_after=run.result["tests_after"], regression=verdict.regression,
            verdict=verdict, test_command=run.result.get("test_command", ""),
            test_command_reason=run.result.get("test_command_reason", ""),
            setup_command=run.result.get("setup_command", ""),
            setup_reason=run.result.get("setup_reason", ""),
            setup_warning=run.result.get("setup_warning", ""),
            spend=total_spend(iterations), model=run.result.get("model", ""),
            inputs_seen=inputs.seen(), inputs_excluded=inputs.excluded,
            requested_by=job.requested_by, egress_denied=run.result.get("egress_denied", []),
            job_id=job.id, job_url=job_url(self.settings.public_url, job.id))
        existing = await gh.get_pull(job.pr_number) if job.pr_number else \
            await gh.find_pull(str(run.result["branch"]))
        if existing:
            pr = await gh.update_pull(int(existing["number"]), body=body)
        else:
            draft = self.settings.draft_prs if run.config.draft is None else run.config.draft
            try:
                pr = await gh.create_pull(title=issue["title"], head=run.result["branch"],
                                          base=base, body=body, draft=draft)
            except GitHubApiError as exc:  # a PR created by an earlier, interrupted attempt
                found = await gh.find_pull(str(run.result["branch"]))
                if found is None:
                    raise
                log.info("PR already existed: %s", exc)
                pr = await gh.update_pull(int(found["number"]), body=body)
        run.result.update(pr_number=pr["number"], pr_url=pr["html_url"])
        await self._write(run, pr_number=pr["number"])
        return pr

    async def _review_summary(self, run: Run, number: int, files: list[FileChange],
                              verdict: Verdict) -> None:
        check_first, risks = review_notes(files, verdict.regression)
        risks = [r for r in verdict.risks if r not in risks] + risks
        body = self.templates.render("review_summary", check_first=check_first, risks=risks,
                                     files=files)
        await run.gh.create_comment(number, body)

    async def _answer_review(self, run: Run, summary: str) -> None:
        assert run.job.pr_number is not None
        lines = summary.splitlines()
        for index, comment_id in enumerate(run.result.get("review_threads", []), start=1):
            answer = next((ln for ln in lines if re.match(rf"\s*{index}[.):]", ln)), summary)
            await run.gh.reply_review_comment(run.job.pr_number, comment_id,
                                              f"Addressed in {run.result['head_sha'][:7]}: "
                                              f"{answer.strip()[:2000]}")

    async def _check_run(self, run: Run, head: str, verdict: Verdict) -> None:
        summary = self.templates.render(
            "check_run", verdict=verdict, tests_base=run.result["tests_base"],
            tests_before=run.result["tests_before"], tests_after=run.result["tests_after"],
            test_command=run.result.get("test_command", ""),
            test_command_reason=run.result.get("test_command_reason", ""))
        check = await run.gh.create_check_run(
            name="Handoff", head_sha=head, status="completed", conclusion=verdict.conclusion,
            external_id=str(run.job.id), output={"title": verdict.title,
                                                 "summary": summary[:60_000]})
        run.result["check_run_id"] = check["id"]


async def finish_despite_cancel(work: Awaitable[None]) -> None:
    """Run clean-up to its end even when the job is cancelled (again) meanwhile, so no
    sandbox or workspace outlives a cancelled job; the cancellation is raised afterwards."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


def evidence(criteria: list[str], summary: str) -> list[dict[str, Any]]:
    """Each criterion with the summary line that claims it, or none (marked unmet)."""
    lines = [ln.strip() for ln in summary.splitlines() if ln.strip()]
    out = []
    for index, text in enumerate(criteria, start=1):
        words = {w for w in re.findall(r"[a-z0-9_]{4,}", text.lower())}
        found = next((ln for ln in lines if re.match(rf"{index}[.):]\s", ln)), None)
        if found is None and words:
            scored = [(len(words & set(re.findall(r"[a-z0-9_]{4,}", ln.lower()))), ln)
                      for ln in lines]
            best = max(scored, default=(0, ""))
            found = best[1] if best[0] >= max(1, len(words) // 2) else None
        out.append({"text": text, "met": found is not None, "evidence": found or ""})
    return out


def evidence_across(criteria: list[str], summaries: list[str]) -> list[dict[str, Any]]:
    """Each criterion with the first iteration's summary line that claims it."""
    merged = evidence(criteria, "")
    for summary in summaries:
        for have, found in zip(merged, evidence(criteria, summary), strict=True):
            if not have["met"] and found["met"]:
                have.update(found)
    return merged
