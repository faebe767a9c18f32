"""The sandbox step: start the job's sandbox and install what the repository needs, with egress
to the allowed hosts only, then close the network."""

from __future__ import annotations

import re

from bot.config import Settings
from bot.executor import warmstart
from bot.executor.agent.presets import image_for
from bot.executor.changes import exclude
from bot.executor.dependencies import Setup, build_files_changed, default_setup
from bot.executor.gitops import Checkout
from bot.executor.run import Run
from bot.executor.sandbox import Backend, CommandResult, Sandbox
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
    configured one, else an install of the dependencies the repository declares."""
    co, config, record = p.checkout, p.config, run.record
    setup = Setup(config.setup_command, "set as `setup_command` in `.github/handoff.yml`") \
        if config.setup_command else None
    if config.setup_command is None:
        setup = await default_setup(co, record.delivery.base_sha)
    record.setup.command = setup.command if setup else ""
    record.setup.reason = setup.reason if setup else ""
    record.setup.offline = ""
    base_sha = record.delivery.base_sha
    if setup and (changed := await build_files_changed(co, base_sha, setup.command)):
        record.setup.offline = wording.SETUP_OFFLINE.format(files=", ".join(
            code(p) for p in changed[:10]) + (f" and {len(changed) - 10} more"
                                                 if len(changed) > 10 else ""))
    config.image = image_for(config.image, config.agent, settings)
    found = await warmstart.plan(run, p, setup, backend, settings) if setup else None
    warm = found is not None and found.state == "warm"
    online = [*settings.egress_allow, *config.network.allow, *settings.package_index_hosts()]
    egress = online if setup and not record.setup.offline and not warm else []
    mirror = workspaces.mirror_path(run.job.repo) / "objects"
    box = await backend.start(run.job.id, co.work_tree, egress=egress, image=config.image,
                              owner=run.job.lease_owner or "",
                              mounts=[(mirror, SANDBOX_OBJECTS),
                                      *(warmstart.mounts(found, backend) if found else [])])
    run.closing.push_async_callback(box.close)
    run.mark("sandbox")
    if setup is None or found is None:
        return Sandboxed(box)
    if warm and await warm_start(run, co, box, found, backend, settings):
        return Sandboxed(box, setup.command)
    if warm:  # the kept environment could not be unpacked: the setup runs after all
        await box.set_egress(online)
    await run.stage("setup", wording.INSTALLING.format(command=code(setup.command)))
    done = await box.exec(setup.command, env=settings.package_index_env() or None)
    check_limits(run, box)
    await box.set_egress([])
    if done.ok and setup.offline:  # the repository's own build, never with network
        done = await box.exec(setup.offline)
        check_limits(run, box)
    if done.ok:
        await warmstart.keep(run, co, box, found, backend, settings)
    warmstart.record(run, found, settings)
    await keep_out_of_changes(co)
    run.mark("setup")
    if done.ok:
        return Sandboxed(box, setup.command)
    why = f"{code(setup.command)} ended with {done.describe()}: {inline(setup_cause(done))}"
    if config.setup_command and not record.setup.offline:
        raise JobFailed(Failure.SETUP_FAILED, wording.SETUP_COMMAND_FAILED.format(why=why))
    # A guessed setup that fails, or one kept from the network, does not stop the job: the PR
    # says so, and the tests before and after tell what it cost.
    record.setup.warning = wording.SETUP_WARNING.format(why=why)
    return Sandboxed(box, setup.command)


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
