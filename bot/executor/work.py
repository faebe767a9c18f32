"""The work step: the baseline tests (beside the agent where they can be), the agent's run,
the tests again, and the verdict."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

from bot.config import Settings
from bot.executor import resume
from bot.executor.agent.cli import CliAgent
from bot.executor.agent.external import ExternalAgent
from bot.executor.agent_inputs import images, mcp_tools
from bot.executor.briefing import make_agent
from bot.executor.iterations import earlier
from bot.executor.run import Run, finish_despite_cancel
from bot.executor.sandbox import Backend, Sandbox
from bot.executor.setup import check_limits
from bot.executor.steps import Judged, Prepared, Ran, Sandboxed
from bot.executor.testrun import TestCommand, not_run, run_tests
from bot.executor.verdict import NO_EVIDENCE_NEEDED, decide, last_failed_check
from bot.executor.workspace import SANDBOX_OBJECTS, Workspaces
from bot.jobs.store import Jobs
from bot.jobs.testreport import TestReport
from bot.reporter import wording


async def baseline(run: Run, p: Prepared, sb: Sandboxed, command: str, backend: Backend,
                   workspaces: Workspaces, copy: Path | None = None) -> TestReport:
    """The tests before the change. Without a setup command they run in a second sandbox
    over ``copy``, the untouched work tree written from git objects (``Workspaces.snapshot``),
    beside the agent (the suite is most of a job's time on real repositories); after a setup,
    in the job's own sandbox, where the setup's installs are, before the agent."""
    if sb.setup or copy is None:
        await run.stage("baseline")
        report = await run_tests(sb.sandbox, command, "before")
        check_limits(run, sb.sandbox)
        return report
    started = time.monotonic()
    mirror = workspaces.mirror_path(run.job.repo) / "objects"
    box = await backend.start(f"{run.job.id}-baseline", copy, image=p.config.image,
                              owner=run.job.lease_owner or "",
                              mounts=[(mirror, SANDBOX_OBJECTS)])
    try:
        report = await run_tests(box, command, "before")
        check_limits(run, box, own=False)
    finally:
        await finish_despite_cancel(box.close())
    run.record.timings["baseline tests (beside the agent)"] = \
        round(time.monotonic() - started, 3)
    return report


async def run_agent(run: Run, p: Prepared, box: Sandbox, spec: str, settings: Settings,
                    dollars_left: float | None) -> Ran:
    """The agent's run in the sandbox (its dollars capped by the month's budget left, if
    one caps this job); the network is closed again after it."""
    await run.stage("agent", wording.STARTING_AGENT)
    pictures, note = await images(run, p, settings)
    agent = make_agent(run, p, settings, dollars_left, await mcp_tools(run, p, box, settings),
                       pictures)
    spec = f"{spec}\n{note}\n" if note else spec
    hosts = list(p.config.network.agent)  # the repository's opt-in, else no network
    # An agent command calls its model itself: that host too (a CLI preset's goes through
    # the job's relay, which it allows itself).
    if isinstance(agent, ExternalAgent) and not isinstance(agent, CliAgent):
        url = urlsplit(settings.model_base_url)
        hosts.append(f"{url.hostname}:{url.port}" if url.port else str(url.hostname))
    if hosts:
        await box.set_egress(hosts)
    if isinstance(agent, ExternalAgent):
        outcome = await agent.run(spec, box)
    else:  # a job handed back or taken over goes on from its last saved step
        outcome = await agent.run(spec, box, await resume.restore(run, p.checkout, p.start_sha))
        run.record.agent.checkpoint = None
    await box.set_egress([])
    check_limits(run, box)
    run.mark("agent")
    return Ran(outcome, agent.transcript.path)


async def judge(run: Run, box: Sandbox, tests: TestCommand | None, before: TestReport,
                jobs: Jobs, template: str = "", transcript: Path | None = None,
                setup_warning: str = "") -> Judged:
    """The tests after the change, compared test by test with the first iteration's base,
    and the verdict. ``template`` is the spec's (some need no evidence), ``transcript`` the
    agent's (its last failed check), ``setup_warning`` a setup that failed but went on."""
    history, base = await earlier(jobs, run.job)
    if base is None or base.command != before.command:
        base = before
    after = None
    if tests and before.state != "config-error":
        await run.stage("testing")
        after = await run_tests(box, tests.command, "after")
        check_limits(run, box)
    after_line = after.line() if after else \
        before.line() if before.state == "config-error" else not_run().line()
    templates = [it.template for it in history] + [template]
    verdict = decide(base if tests else None, after,
                     prior_evidence=any(it.evidence for it in history),
                     evidence_expected=not any(t in NO_EVIDENCE_NEEDED for t in templates),
                     last_failed_check=last_failed_check(transcript),
                     setup_failure=setup_warning)
    run.mark("tests after")
    return Judged(verdict, base, before, after, after_line)
