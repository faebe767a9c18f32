"""The first step: check out the branch, then read the repository's settings and the spec's
inputs from git objects of the default branch, never from files the agent may have written."""

from __future__ import annotations

import re
from typing import Any

from bot.executor.gitops import Checkout
from bot.executor.repo_config import CONFIG_PATH, RepoConfig, RepoConfigError, parse_repo_config
from bot.executor.run import Run
from bot.executor.spec import build_inputs, repo_instructions
from bot.executor.workspace import Workspaces
from bot.github.client import WRITE_ROLES, RepoClient
from bot.jobs.states import Failure
from bot.jobs.worker import JobFailed
from bot.receiver.decisions import AGENT_BRANCH_PREFIX
from bot.reporter import wording


def slug(title: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return words[:40].rstrip("-") or "work"


async def prepare(run: Run, workspaces: Workspaces, template_names: list[str],
                  trigger_label: str) -> Checkout:
    """Check out the job's branch and gather its settings and spec inputs."""
    job, gh = run.job, run.gh
    run.issue = await gh.get_issue(job.issue_number)
    repo = await gh.get_repo()
    run.base = str(repo["default_branch"])
    branch = job.branch or f"{AGENT_BRANCH_PREFIX}{job.issue_number}-{slug(run.issue['title'])}"
    run.record.branch, run.record.base = branch, run.base
    await run.write(branch=branch)
    run.clone_url = str(repo["clone_url"])
    co = run.checkout = await workspaces.checkout(job.id, job.repo, branch, run.base,
                                                  run.clone_url, await gh.token())
    run.mark("workspace")
    base_sha = run.record.base_sha = await co.rev(f"refs/remotes/origin/{run.base}")
    run.start_sha = await co.rev("HEAD")
    run.config = await read_config(co, base_sha, template_names)
    comments = await gh.list_comments(job.issue_number)
    writers = await writers_among(gh, comments)
    left_out = await approved_issue(run)
    run.inputs = build_inputs(job.repo, run.issue, comments, writers, trigger_label,
                              await repo_instructions(co, base_sha))
    run.inputs.excluded += left_out
    run.mark("spec inputs")
    return co


async def read_config(co: Checkout, base_sha: str, template_names: list[str]) -> RepoConfig:
    """``.github/handoff.yml`` as the default branch has it; a bad one ends the job."""
    try:
        return parse_repo_config(await co.read_blob(base_sha, CONFIG_PATH), template_names)
    except RepoConfigError as exc:
        raise JobFailed(Failure.CONFIG_ERROR, str(exc)) from exc


async def approved_issue(run: Run) -> list[str]:
    """Use the issue as it was handed over, with later edits by writers only; returns the
    edits left out. (Jobs recorded before snapshots existed use the live text.)"""
    snap = run.job.context.get("issue_snapshot")
    if not snap:
        return []
    text, left_out = dict(snap), []
    for change in run.job.context.get("edits", []):
        if await run.gh.permission(change["by"]) in WRITE_ROLES:
            text = {"title": change["title"], "body": change["body"]}
        else:
            left_out.append(wording.EDIT_LEFT_OUT.format(login=change["by"]))
    live = {"title": run.issue.get("title") or "", "body": run.issue.get("body") or ""}
    if live != text and not left_out:
        left_out.append(wording.LATER_CHANGE_LEFT_OUT)
    run.issue = {**run.issue, **text}
    run.record.issue_snapshot = text
    return left_out


async def writers_among(gh: RepoClient, comments: list[dict[str, Any]]) -> set[str]:
    """The comments' authors who have write access (only their words steer the agent)."""
    authors = {str((c.get("user") or {}).get("login", "")) for c in comments}
    return {a for a in authors if a and await gh.permission(a) in WRITE_ROLES}
