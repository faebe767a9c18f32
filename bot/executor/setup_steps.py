"""Setup steps: the repository's named commands, run in order in the sandbox before the agent.

Each step reaches the hosts the server allows, the repository's ``network.allow`` and its own
``network`` list (through the egress proxy), and gets as environment variables the secrets it
names, only for its own command. Each step's output (redacted) and time go into the job's
transcript; the first that fails stops the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bot import logs
from bot.config import Settings
from bot.executor.agent.transcript import Transcript
from bot.executor.repo_config import SetupStep
from bot.executor.run import Run
from bot.executor.sandbox import CommandResult, Sandbox
from bot.jobs.outcome import JobFailed
from bot.jobs.record import StepRun
from bot.jobs.secrets import Secrets, SecretsError
from bot.jobs.states import Failure
from bot.reporter import wording
from bot.reporter.markdown import block, code, inline

TAIL_LINES = 20
TAIL_CHARS = 3000
TRANSCRIPT_CHARS = 20_000


@dataclass(frozen=True)
class Failed:
    """The step that failed and how it ended."""

    step: SetupStep
    result: CommandResult


def transcript(run: Run, settings: Settings) -> Transcript:
    """The job's transcript (the agent's, later, appends to the same file)."""
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else ""
    return Transcript(settings.data_dir / "transcripts" / f"job-{run.job.id}.jsonl",
                      secrets=(key,))


async def job_secrets(run: Run, steps: list[SetupStep], settings: Settings) -> dict[str, str]:
    """The secrets the steps name, from the store (most specific scope first); remembered
    for redaction in all their forms. A name with no secret, or no key, ends the job."""
    names = sorted({name for step in steps for name in step.secrets})
    if not names:
        return {}
    key = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    try:
        found = await Secrets(run.store.engine, key).for_repo(run.job.installation_id,
                                                              run.job.repo, names)
    except SecretsError as exc:
        raise JobFailed(Failure.SETUP_FAILED, wording.SECRETS_UNREADABLE.format(
            why=str(exc))) from exc
    logs.add_secrets(*found.values(), encoded=True)
    if missing := [n for n in names if n not in found]:
        if key is None:
            raise JobFailed(Failure.SETUP_FAILED, wording.SECRETS_UNREADABLE.format(
                why="the server has no HANDOFF_SECRETS_KEY"))
        users = [s.name for s in steps if set(s.secrets) & set(missing)]
        raise JobFailed(Failure.SETUP_FAILED, wording.SECRETS_MISSING.format(
            names=", ".join(map(code, missing)), steps=", ".join(map(code, users)),
            repo=run.job.repo))
    return found


async def run_steps(run: Run, box: Sandbox, steps: list[SetupStep], hosts: list[str] | None,
                    env: dict[str, str], secrets: dict[str, str], settings: Settings,
                    check: Callable[[], None]) -> Failed | None:
    """Run ``steps`` in order; ``hosts`` is what every step may reach (None: no network at
    all, not even a step's own list); ``check`` runs after each (the sandbox's limits).
    Returns the first failure, or None."""
    notes = transcript(run, settings)
    for number, step in enumerate(steps, start=1):
        await run.stage("setup", wording.SETUP_STEP.format(
            number=number, count=len(steps), name=code(step.name), command=code(step.run))
            if len(steps) > 1 else wording.INSTALLING.format(command=code(step.run)))
        await box.set_egress([*hosts, *step.network] if hosts is not None else [])
        given = {name: secrets[name] for name in step.secrets if name in secrets}
        started = time.monotonic()
        done = await box.exec(step.run, env={**env, **given} or None)
        seconds = round(time.monotonic() - started, 3)
        output = logs.redact(done.stdout + ("\n" if done.stdout and done.stderr else "")
                             + done.stderr)
        notes.write("setup", step=step.name, command=step.run, ok=done.ok,
                    exit=done.describe(), seconds=seconds, secrets=list(given),
                    output=output[-TRANSCRIPT_CHARS:])
        run.record.setup.steps.append(StepRun(name=step.name, ok=done.ok, seconds=seconds,
                                              exit=done.describe()))
        check()
        if not done.ok:
            return Failed(step, done)
    return None


def tail(result: CommandResult) -> str:
    """The last lines of a command's output, redacted, as a code block nothing can leave."""
    text = logs.redact(result.stdout + "\n" + result.stderr).strip()
    lines = text.splitlines()[-TAIL_LINES:]
    return block("\n".join(lines)[-TAIL_CHARS:] or "(no output)")


def failure(failed: Failed) -> str:
    """Why the job ended, as GitHub shows it: the step's name, how it ended, its output."""
    return wording.SETUP_STEP_FAILED.format(name=code(failed.step.name),
                                            why=inline(failed.result.describe()),
                                            tail=tail(failed.result))
