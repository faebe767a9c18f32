"""What the agent is given: the spec (from a template) and the agent itself, with its budget,
model and transcript."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.config import Settings
from bot.executor import ci, discussion, resume
from bot.executor.agent.cli import CliAgent
from bot.executor.agent.cli_mcp import CliServers
from bot.executor.agent.external import ExternalAgent
from bot.executor.agent.loop import Agent
from bot.executor.agent.mcp import McpTools
from bot.executor.agent.models import make_model
from bot.executor.agent.presets import Endpoint, preset_for
from bot.executor.agent.transcript import Transcript
from bot.executor.changes import added_paths
from bot.executor.gitops import NO_DRIVERS
from bot.executor.hidden import strip_hidden
from bot.executor.rebase import both_sides
from bot.executor.run import Run
from bot.executor.spec import choose_template, render_spec
from bot.executor.steps import Briefed, Prepared
from bot.executor.testrun import TestCommand
from bot.jobs.cifix import CIRound
from bot.jobs.spend import Budget, Spend
from bot.jobs.store import Jobs
from bot.jobs.testreport import TestReport
from bot.prices import price_for
from bot.reporter.templates import Templates
from handlers.vocabulary import CI_FIX

# What the agent reads when it first calls `finish` having added files (SWE-agent's review on
# submit): the pull request should carry the fix and its tests, not the scratch of the work.
ADDED_FILES_NOTE = """Not finished yet: first check the files you added.
{files}

Delete the ones that are scratch from your work (reproduction scripts, backups, notes, patch
files, test scripts outside the test suite) with `rm`. Keep a file only if the change needs it,
such as a new test in the project's test suite. Then call `finish` again."""


async def write_spec(run: Run, p: Prepared, templates: Templates, jobs: Jobs,
                     template_labels: dict[str, str], tests: TestCommand | None = None,
                     baseline: TestReport | None = None, ci_round: CIRound | None = None,
                     conflicts: Sequence[str] = ()) -> Briefed:
    """The spec: the issue's template for a new job; for an iteration, the diff so far, the
    feedback and (for a review) the reviewer's threads. ``baseline`` is the tests' run before
    the change if it ended before the agent starts; a CI fix's ``ci_round`` and a /rebase's
    ``conflicts`` say what to fix."""
    job, inputs = run.job, p.inputs
    common: dict[str, Any] = dict(test_command=tests.command if tests else "",
                                  baseline=baseline.line() if tests and baseline else "")
    if job.kind == "implement":
        name = choose_template(inputs.labels, {**template_labels, **p.config.templates})
        if job.feedback:
            inputs.comments.append({"author": job.requested_by,
                                    "body": strip_hidden(job.feedback)})
        return Briefed(render_spec(templates, name, inputs, **common), name)
    diff = await p.checkout.git("diff", *NO_DRIVERS,
                                f"refs/remotes/origin/{p.base}...{p.start_sha}")
    origin = await jobs.get_job(int(job.context.get("origin_job", 0) or 0))
    previous = (origin.result.summary if origin else "") or job.result.summary
    extra = dict(requested_by=job.requested_by, feedback=strip_hidden(job.feedback),
                 previous_summary=previous, diff=diff[:30_000], base_branch=p.base, **common)
    talk, answer = await conversation(run, p)
    extra.update(talk)
    if job.kind == "review":
        extra["review_comments"], answer = await review_threads(run)
    if job.kind == CI_FIX:
        extra.update(ci.brief(ci_round))
    if job.kind == "rebase":
        extra["conflicts"] = await both_sides(p.checkout, p.base, list(conflicts))
    return Briefed(render_spec(templates, job.kind, inputs, **extra), job.kind, answer)


async def review_threads(run: Run) -> tuple[list[dict[str, Any]], list[int]]:
    """The reviewer's new threads on the pull request, and their ids (answered later)."""
    job = run.job
    assert job.pr_number is not None
    review_id = job.context.get("review_id")
    threads = [c for c in await run.gh.review_comments(job.pr_number)
               if not c.get("in_reply_to_id") and
               (review_id is None or c.get("pull_request_review_id") in (None, review_id))
               and (c.get("user") or {}).get("login") == job.requested_by]
    return [{"path": c["path"], "line": c.get("line"), "author": c["user"]["login"],
             "body": strip_hidden(c["body"])} for c in threads], [c["id"] for c in threads]


async def conversation(run: Run, p: Prepared) -> tuple[dict[str, Any], list[int] | None]:
    """The pull request's whole conversation for an iteration's spec (``conversation``), the
    thread a request in a review thread is answered in (``thread``, its id returned beside),
    and, for a review that came without its text (its inline comments came first), the
    review's own words."""
    job, inputs = run.job, p.inputs
    assert job.pr_number is not None
    request = {int(i) for i in (job.context.get("comment_id"), job.context.get(
        "review_comment_id"), job.context.get("review_id")) if i}
    talk = await discussion.gather(run.gh, job.pr_number, request)
    inputs.excluded += [e for e in talk.excluded if e not in inputs.excluded]
    inputs.seen += [s for s in talk.seen() if s not in inputs.seen]
    thread = talk.thread_of(int(job.context.get("review_comment_id") or 0))
    # A mention in a review thread is answered there once delivered.
    answer = [thread.id] if job.kind == "mention" and thread is not None else None
    out: dict[str, Any] = {"conversation": talk.as_dict(),
                           "thread": thread.as_dict() if thread else None}
    review = next((r for r in talk.reviews if r.id == job.context.get("review_id")), None)
    if job.kind == "review" and not job.feedback and review is not None:
        out["feedback"] = review.body
    return out, answer


def make_agent(run: Run, p: Prepared, settings: Settings, dollars_left: float | None,
               extra: McpTools | CliServers | None = None,
               images: list[dict[str, Any]] | None = None) -> Agent | ExternalAgent:
    """The built-in agent (or the configured CLI), with the job's budget and transcript, its
    MCP servers' tools (``extra``) and the issue's images for its first request."""
    s, b = settings, p.config.budget
    model_name = p.config.model or s.model_name
    price_in, price_out = price_for(model_name, s.prices)  # logs a model it has no price for
    budget = Budget(max_steps=b.max_steps or s.max_steps, max_tokens=b.max_tokens or s.max_tokens,
                    max_cost_usd=min(b.max_cost_usd or s.max_cost_usd,
                                     dollars_left if dollars_left is not None
                                     else float("inf")),
                    max_wall_seconds=b.max_wall_seconds or s.max_wall_seconds,
                    price_in=price_in, price_out=price_out)
    key = s.model_api_key.get_secret_value() if s.model_api_key else None
    transcript = Transcript.of_job(s.data_dir, run.job.id,
                                   secrets=(key or "", *(extra.secrets if extra else ())))
    if isinstance(extra, McpTools):
        transcript.write("mcp", tools=sorted(extra.tools), left_out=extra.left_out)
    elif extra is not None:
        transcript.write("mcp", servers=sorted([*extra.local, *extra.remote]),
                         left_out=extra.left_out)
    run.record.agent.transcript, run.record.agent.model = str(transcript.path), model_name
    if s.agent_command:
        return ExternalAgent(s.agent_command, s.agent_env, budget, transcript)
    if preset := preset_for(p.config.agent, s.agent):
        return CliAgent(preset, Endpoint(s.model_base_url, model_name, key or "", price_in,
                                         price_out, budget.max_cost_usd), budget, transcript,
                        list(p.config.network.agent),
                        extra if isinstance(extra, CliServers) else None)
    model = make_model(s.model_provider, s.model_base_url, model_name, key, s.model_timeout)

    async def progress(spend: Spend) -> None:
        record = run.record.model_copy(deep=True)
        record.agent.spend = spend.stored()
        await run.write(result=record)
        await run.progress(spend)

    async def checkpoint(messages: list[dict[str, Any]], spend: Spend) -> None:
        await resume.save(run, p.checkout, p.start_sha, messages, spend)

    return Agent(model, budget, transcript, s.command_timeout, progress,
                 keep_observations=s.keep_observations, checkpoint=checkpoint,
                 before_finish=lambda: added_files(p),
                 extra=extra if isinstance(extra, McpTools) else None, images=images)


async def added_files(p: Prepared) -> str:
    """The note that shows the agent the files it added before it may finish, or ""."""
    paths = await added_paths(p.checkout, p.start_sha)
    if not paths:
        return ""
    shown = "\n".join(f"- {p}" for p in paths[:50]) + \
        (f"\n- and {len(paths) - 50} more" if len(paths) > 50 else "")
    return ADDED_FILES_NOTE.format(files=shown)
