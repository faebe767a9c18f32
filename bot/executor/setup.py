"""The sandbox step: start the job's sandbox and run the setup steps (or install what the
repository declares), with egress to the allowed hosts only, then close the network and clear
the secrets out."""

from __future__ import annotations

import re

from bot.config import Settings
from bot.executor import warmstart
from bot.executor.agent.presets import image_for
from bot.executor.changes import exclude
from bot.executor.dependencies import Setup, build_files_changed, default_setup
from bot.executor.gitops import Checkout
from bot.executor.repo_config import SetupStep
from bot.executor.run import Run
from bot.executor.sandbox import Backend, CommandResult, Sandbox
from bot.executor.scrub import SecretLeft, scrub
from bot.executor.setup_steps import Failed, failure, job_secrets, run_steps, transcript
from bot.executor.steps import Prepared, Sandboxed
from bot.executor.testrun import ERROR_LINE, last_line
from bot.executor.warm import Plan
from bot.executor.workspace import SANDBOX_OBJECTS, Workspaces
from bot.jobs.outcome import JobFailed
from bot.jobs.states import Failure
from bot.reporter import wording
from bot.reporter.markdown import code, inline


async def start_sandbox(run: Run, p: Prepared, backend: Backend, workspaces: Workspaces,
                        settings: Settings) -> Sandboxed:
    """Start the sandbox (closed with the job, whatever happens) and run the setup: the
    configured steps, else an install of the dependencies the repository declares; then no
    secret is left in it."""
    co, config, record = p.checkout, p.config, run.record
    steps, guessed = await plan(run, p)
    config.image = image_for(config.image, config.agent, settings)
    # The warm cache's key: the steps' commands as the default branch has them.
    setup = Setup(record.setup.command, record.setup.reason,
                  guessed.offline if guessed else "") if steps else None
    found = await warmstart.plan(run, p, setup, backend, settings) if setup else None
    warm = found is not None and found.state == "warm"
    # Files the branch changed decide what runs: then no network, and no secrets either.
    hosts = None if record.setup.offline else \
        [*settings.egress_allow, *config.network.allow, *settings.package_index_hosts()]
    secrets = await job_secrets(run, steps, settings) if hosts is not None else {}
    mirror = workspaces.mirror_path(run.job.repo) / "objects"
    first = [*hosts, *steps[0].network] if steps and hosts is not None and not warm else []
    box = await backend.start(run.job.id, co.work_tree, egress=first, image=config.image,
                              owner=run.job.lease_owner or "",
                              mounts=[(mirror, SANDBOX_OBJECTS),
                                      *(warmstart.mounts(found, backend) if found else [])])
    run.closing.push_async_callback(box.close)
    run.mark("sandbox")
    if not steps:
        return Sandboxed(box)
    if warm and found is not None and await warm_start(run, co, box, found, backend, settings):
        return Sandboxed(box, record.setup.command)
    failed = await run_steps(run, box, steps, hosts, settings.package_index_env(), secrets,
                             settings, lambda: check_limits(run, box))
    await box.set_egress([])
    if config.setup is not None:  # the PR names each step that ran, with its time
        record.setup.reason = wording.SETUP_STEPS_REASON.format(steps=", ".join(
            f"{code(st.name)} ({st.seconds:.1f} s)" for st in record.setup.steps))
    if failed is None and guessed and guessed.offline:  # the repository's own build, offline
        done = await box.exec(guessed.offline)
        check_limits(run, box)
        failed = None if done.ok else Failed(SetupStep(name="build", run=guessed.offline), done)
    if secrets and failed is None:  # before anything is kept: no secret in a warm environment
        await clear_secrets(run, box, settings, list(secrets.values()))
    if failed is None and found is not None:
        await warmstart.keep(run, co, box, found, backend, settings, list(secrets.values()))
    if found is not None:
        warmstart.record(run, found, settings)
    await keep_out_of_changes(co)
    run.mark("setup")
    if failed is not None:
        record.setup.warning = settle(failed, required=guessed is None and
                                      not record.setup.offline)
    return Sandboxed(box, record.setup.command, record.setup.warning)


async def warm_start(run: Run, co: Checkout, box: Sandbox, found: Plan, backend: Backend,
                     settings: Settings) -> bool:
    """Start from the kept environment instead of the setup; False if it cannot be."""
    await run.stage("setup", wording.WARM_START.format(reason=found.reason))
    if not await warmstart.restore(run, box, found, backend, settings):
        return False
    check_limits(run, box)
    warmstart.record(run, found, settings)
    await keep_out_of_changes(co)
    run.mark("setup")
    return True


async def plan(run: Run, p: Prepared) -> tuple[list[SetupStep], Setup | None]:
    """The steps to run (the configured ones, else the guessed install, which is also
    returned) and what the PR says of them; whether the branch keeps them offline."""
    co, record, base_sha = p.checkout, run.record, p.base_sha
    steps, guessed = p.config.setup_steps(), None
    if steps is None and (guessed := await default_setup(co, base_sha)):
        steps = [SetupStep(name="install dependencies", run=guessed.command)]
    steps = steps or []
    record.setup.command = " && ".join(step.run for step in steps)
    record.setup.reason = guessed.reason if guessed else \
        "set as `setup_command` in `.github/handoff.yml`"
    record.setup.offline, record.setup.steps, record.setup.warning = "", [], ""
    commands = "\n".join(step.run for step in steps)
    if steps and (changed := await build_files_changed(co, base_sha, commands)):
        record.setup.offline = wording.SETUP_OFFLINE.format(files=", ".join(
            code(path) for path in changed[:10]) + (f" and {len(changed) - 10} more"
                                                    if len(changed) > 10 else ""))
    return steps, guessed


def settle(failed: Failed, required: bool) -> str:
    """A configured setup that failed ends the job; a guessed one, or one kept from the
    network, does not: its warning, which the PR states, and the tests before and after tell
    what it cost."""
    if required:
        raise JobFailed(Failure.SETUP_FAILED, failure(failed))
    why = f"{code(failed.step.run)} ended with {failed.result.describe()}: " \
          f"{inline(setup_cause(failed.result))}"
    return wording.SETUP_WARNING.format(why=why)


async def clear_secrets(run: Run, box: Sandbox, settings: Settings, values: list[str]) -> None:
    """Before the agent: every file the steps left a secret in is cleaned (the transcript
    says which); one that cannot be ends the job."""
    try:
        changed = await scrub(box, values)
    except SecretLeft as exc:
        raise JobFailed(Failure.SETUP_FAILED, wording.SECRET_LEFT.format(
            files=inline(str(exc)))) from exc
    if changed:
        transcript(run, settings).write("setup-secrets-cleaned", files=changed)


async def keep_out_of_changes(co: Checkout) -> None:
    """What the setup left in the work tree (``node_modules/``, ``*.egg-info``, a virtualenv)
    is no part of the agent's change: excluded in the trusted git directory."""
    made = await co.git("ls-files", "--others", "--exclude-standard", "--directory", "-z")
    exclude(co, [p for p in made.split("\0") if p])


def check_limits(run: Run, box: Sandbox, own: bool = True) -> None:
    """Record refused egress (of the job's ``own`` sandbox); a command stopped by the disk
    limit ends the job."""
    if own:
        run.record.agent.egress_denied = box.egress_refusals
    if (hit := box.limit_hit) is not None:
        raise JobFailed(hit.limit or "sandbox-limit", hit.describe())


NPM_LINE = re.compile(r"^npm (?:ERR!|error)\s?(.*)$", re.MULTILINE)
NPM_DETAIL = re.compile(r"(?:syscall|errno|path|dest|signal|command|cwd)\s|at\s|\d{3}$|$")


def setup_cause(result: CommandResult) -> str:
    """The line of a failed setup's output that says why: npm's error code and message (never
    its "complete log" trailer, a path in a sandbox that is gone), else the first error line,
    else the last line."""
    output = result.stdout + "\n" + result.stderr
    npm = [m[1].strip() for m in NPM_LINE.finditer(output)]
    npm = [line for line in npm if line and "complete log of this run" not in line]
    if npm:
        message = next((line for line in npm[1:] if not NPM_DETAIL.match(line)), "")
        first = npm[0] if npm[0].startswith("code ") or not message else ""
        return "npm error " + ": ".join(p for p in (first, message) if p)[:200]
    found = [m.group(0).strip() for m in ERROR_LINE.finditer(output)]
    return (found[0] if found else last_line(output))[:200]
