"""The first step of a ``ci-fix`` job: read the commit's checks through the API and decide.

It waits (up to ``ci.wait_minutes`` from the job's start) for the commit's other checks, then
takes the ones that matter (branch protection's required checks when it names them, else every
check but Handoff's own) and goes on with those that failed. It stops instead, with one comment
naming each check still failing and why, when every failing check fails on the base branch too,
when ``ci.max_fixes`` rounds were used, or when the same failure came back after a fix. What the
agent is shown (names, conclusions, summaries, annotations, an Actions job's log around its first
error) is the checks' own text, passed as quoted data.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from bot.executor.hidden import strip_hidden
from bot.executor.iterations import earlier
from bot.executor.prepare import org_defaults
from bot.executor.repo_config import CONFIG_PATH, RepoCI, RepoConfigError, parse_repo_config
from bot.executor.run import Run
from bot.github.checks import ChecksClient
from bot.github.client import GitHubApiError
from bot.github.naming import FAILED, STATUS_FAILED
from bot.jobs.cifix import CheckName, CIRound, FailedCheck
from bot.jobs.outcome import WAITING_FOR_CHECKS, JobDeferred
from bot.jobs.record import Iteration
from bot.jobs.states import Failure
from bot.jobs.worker import JobFailed, JobResult
from bot.logs import redact
from bot.reporter.templates import Templates
from handlers.vocabulary import CI_FIX

log = logging.getLogger("handoff.executor")

ACTIONS = "github-actions"
LOG_CHARS = 6000  # of a job's log, around its first error
LOG_BEFORE = 15  # lines kept before the first error
SUMMARY_CHARS = 2000
ANNOTATIONS = 30
RECHECK_SECONDS = 30.0  # between looks at a commit whose checks still run
ERROR_LINE = re.compile(r"##\[error\]|\berror\b|\bERROR\b|\bFAIL(ED)?\b|Traceback \(most recent",
                        re.IGNORECASE)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ", re.MULTILINE)


@dataclass
class Checks:
    """A commit's checks that matter, once they finished or the wait ran out."""

    sha: str
    failed: list[FailedCheck] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


class Stop(Exception):
    """The job fixes nothing: ``why`` in the comment that names the checks."""

    def __init__(self, why: str, checks: list[FailedCheck], tried: bool = True) -> None:
        super().__init__(why)
        self.why, self.checks, self.tried = why, checks, tried


def log_excerpt(text: str, limit: int = LOG_CHARS) -> str:
    """The part of a job's log around its first error (timestamps and colours off), at most
    ``limit`` characters, secrets redacted."""
    lines = STAMP.sub("", ANSI.sub("", text)).splitlines()
    first = next((i for i, line in enumerate(lines) if ERROR_LINE.search(line)), None)
    start = max(0, (first if first is not None else len(lines)) - LOG_BEFORE)
    excerpt = "\n".join(lines[start:])
    if len(excerpt) > limit:  # the start of the trouble, and the end where the job stopped
        half = limit // 2
        excerpt = excerpt[:half] + "\n[… log cut …]\n" + excerpt[-half:]
    return redact(excerpt)


def matters(name: str, app: str, required: list[str] | None, own: str) -> bool:
    """A check counts: a required one when branch protection names some, else any but
    Handoff's own."""
    if app == own:
        return False
    return name in required if required else True


async def settled(gh: ChecksClient, sha: str, own: str, required: list[str] | None,
                  until: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The commit's check runs and statuses that matter, once none is pending or ``until``
    passed; and the names still pending then."""
    while True:
        runs = [r for r in await gh.check_runs(sha)
                if matters(r["name"], (r.get("app") or {}).get("slug", ""), required, own)]
        statuses = [s for s in await statuses_of(gh, sha)
                    if matters(s["context"], "", required, own)]
        pending = [r["name"] for r in runs if r.get("status") != "completed"] + \
                  [s["context"] for s in statuses if s.get("state") == "pending"]
        left = until - time.time()
        if not pending or left <= 0:
            return runs, statuses, pending
        await asyncio.sleep(min(10.0, max(0.2, left / 10)))


async def statuses_of(gh: ChecksClient, sha: str) -> list[dict[str, Any]]:
    """Commit statuses, or none when the App may not read them (an App made before this)."""
    try:
        return await gh.statuses(sha)
    except GitHubApiError as exc:
        if exc.status not in (403, 404):
            raise
        log.info("commit statuses of %s not readable: %s", sha[:7], exc)
        return []


async def details(gh: ChecksClient, run: dict[str, Any]) -> FailedCheck:
    """A failed check run with its annotations and, for an Actions job, its log."""
    output = run.get("output") or {}
    app = (run.get("app") or {}).get("slug", "")
    notes = await gh.annotations(run["id"]) if output.get("annotations_count") else []
    text = ""
    if app == ACTIONS:
        try:
            text = log_excerpt(await gh.job_log(run["id"]))
        except GitHubApiError as exc:  # an App without actions read, or the log expired
            text = f"(the job's log could not be read: {exc.status or exc})"
    return FailedCheck(
        name=run["name"], conclusion=str(run.get("conclusion")), app=app,
        title=str(output.get("title") or "")[:300],
        summary=redact(str(output.get("summary") or ""))[:SUMMARY_CHARS],
        annotations=[{k: a.get(k) for k in ("path", "start_line", "end_line",
                                           "annotation_level", "title", "message")}
                     for a in notes[:ANNOTATIONS]],
        log=text, url=str(run.get("html_url") or run.get("details_url") or ""))


async def read_checks(gh: ChecksClient, sha: str, own: str, required: list[str] | None,
                      until: float) -> Checks:
    runs, statuses, pending = await settled(gh, sha, own, required, until)
    failed = [await details(gh, r) for r in runs if r.get("status") == "completed"
              and r.get("conclusion") in FAILED]
    failed += [FailedCheck(name=s["context"], conclusion=s["state"],
                           summary=redact(str(s.get("description") or "")),
                           url=str(s.get("target_url") or ""))
               for s in statuses if s.get("state") in STATUS_FAILED]
    return Checks(sha, failed, pending)


async def red_on_base(gh: ChecksClient, base: str, names: list[str]) -> set[str]:
    """Which of these checks fail on the base branch's head too."""
    runs = await gh.check_runs(base)
    red = {r["name"] for r in runs if r.get("conclusion") in FAILED}
    red |= {s["context"] for s in await statuses_of(gh, base) if s.get("state") in STATUS_FAILED}
    return red & set(names)


async def ci_settings(run: Run, template_names: list[str]) -> RepoCI:
    """The ``ci:`` settings of ``.github/handoff.yml`` on the default branch (the job's
    checkout comes later, only when there is something to fix)."""
    try:
        text = await org_defaults(run.gh, await run.gh.read_file(CONFIG_PATH))
        return parse_repo_config(text, template_names).ci
    except RepoConfigError as exc:
        raise JobFailed(Failure.CONFIG_ERROR, str(exc)) from exc


def rounds(history: list[Iteration]) -> list[CIRound]:
    """The CI fixes among a pull request's iterations, oldest first."""
    return [it.ci for it in history if it.kind == CI_FIX and it.ci is not None]


def decide(checks: Checks, base_red: set[str], done: list[CIRound],
           settings: RepoCI) -> list[FailedCheck]:
    """The failed checks to fix, or ``Stop`` with why not."""
    ours = [c for c in checks.failed if c.name not in base_red]
    if not ours:
        raise Stop("every failing check fails on the base branch too, so it is not this pull "
                   "request's to fix; no fix was attempted", checks.failed, tried=False)
    if len(done) >= settings.max_fixes:
        raise Stop(f"it used the {settings.max_fixes} rounds of fixes `ci.max_fixes` allows "
                   "(`.github/handoff.yml`)", checks.failed)
    if done and done[-1].key == [c.key() for c in ours]:
        raise Stop("the same failure came back after its fix", checks.failed)
    return ours


async def examine(run: Run, templates: Templates, own_slug: str,
                  hold_seconds: float) -> JobResult | CIRound:
    """Read the checks of the commit the job was started for and decide. Returns the job's
    result when there is nothing to fix (it ends quietly); raises ``JobFailed`` when it stops
    with checks still failing, ``JobDeferred`` when checks still run after ``hold_seconds``
    (the worker's slot goes to other jobs meanwhile); otherwise returns the round: what to
    fix."""
    job = run.job
    sha = str(job.context.get("head_sha", ""))
    settings = await ci_settings(run, templates.names())
    if settings.max_fixes == 0:
        return quiet(run, "the repository turned CI fixes off (ci.max_fixes: 0)")
    pull = await run.gh.get_pull(int(job.pr_number or 0))
    if pull.get("state") != "open":
        return quiet(run, f"the pull request is {pull.get('state')}")
    if pull["head"]["sha"] != sha:
        return quiet(run, f"{sha[:7]} is no longer the pull request's head; its checks are "
                     "not Handoff's to fix")
    gh = ChecksClient(run.gh.app, run.gh.installation_id, job.repo)
    required = await gh.required_checks(pull["base"]["ref"])
    until = job.created_at + settings.wait_minutes * 60
    checks = await read_checks(gh, sha, own_slug, required, min(until, time.time() + hold_seconds))
    if checks.pending and time.time() < until:
        raise JobDeferred(min(until, time.time() + RECHECK_SECONDS),
                          f"waiting for {', '.join(checks.pending)} to finish", run.record,
                          stage=WAITING_FOR_CHECKS, counts=False)
    if not checks.failed:
        return quiet(run, "no check that matters failed" + (
            f"; still pending: {', '.join(checks.pending)}" if checks.pending else ""))
    base_red = await red_on_base(gh, pull["base"]["ref"], [c.name for c in checks.failed])
    done = rounds((await earlier(run.store, job))[0])
    try:
        fix = decide(checks, base_red, done, settings)
    except Stop as stop:
        raise JobFailed(Failure.CI_STOPPED, templates.render(
            "ci_stopped", why=stop.why, checks=stop.checks, sha=sha, base=pull["base"]["ref"],
            base_red=sorted(base_red), pending=checks.pending, tried=stop.tried,
            rounds=len(done))) from None
    return CIRound(
        round=len(done) + 1, max_fixes=settings.max_fixes, sha=sha, checks=fix,
        key=[c.key() for c in fix], names=[CheckName(name=c.name, conclusion=c.conclusion)
                                           for c in fix],
        why=fix[0].why()[:300], base_red=sorted(base_red), pending=checks.pending,
        waited_minutes=settings.wait_minutes if checks.pending else 0)


def quiet(run: Run, why: str) -> JobResult:
    """The job's end when there is nothing to fix: no summary (the pull request's last one
    stays the one the next iteration reads), the reason on the dashboard."""
    log.info("job %s: nothing to fix: %s", run.job.id, why)
    run.record.delivery.final_detail = why
    return JobResult("", run.record)


def brief(ci: CIRound | None) -> dict[str, Any]:
    """What the spec shows of the failing checks: their own text, hidden markup removed (it
    is fenced as data in the template)."""
    if ci is None:
        return {"checks": [], "round": 1, "max_fixes": 1, "base_red": [], "pending": []}

    def clean(check: FailedCheck) -> FailedCheck:
        notes = [{**a, "title": strip_hidden(str(a.get("title") or "")),
                  "message": strip_hidden(str(a.get("message") or "")),
                  "path": strip_hidden(str(a.get("path") or ""))} for a in check.annotations]
        return check.model_copy(update={
            "name": strip_hidden(check.name), "title": strip_hidden(check.title),
            "summary": strip_hidden(check.summary), "log": strip_hidden(check.log),
            "annotations": notes})

    return {"checks": [clean(c) for c in ci.checks], "round": ci.round,
            "max_fixes": ci.max_fixes, "base_red": ci.base_red, "pending": ci.pending}
