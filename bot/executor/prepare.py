"""The first step: check out the branch, then read the repository's settings and the spec's
inputs from git objects of the default branch, never from files the agent may have written."""

from __future__ import annotations

import logging
import re
from typing import Any

from bot.executor.gitops import Checkout
from bot.executor.repo_config import (
    CONFIG_PATH,
    RepoConfig,
    RepoConfigError,
    extends_target,
    parse_repo_config,
    with_defaults,
)
from bot.executor.run import Run
from bot.executor.spec import build_inputs, repo_instructions
from bot.executor.steps import Prepared
from bot.executor.workspace import Workspaces
from bot.github.client import WRITE_ROLES, GitHubApiError, RepoClient
from bot.github.naming import AGENT_BRANCH_PREFIX
from bot.jobs.outcome import JobFailed
from bot.jobs.states import Failure
from bot.reporter import wording

log = logging.getLogger("handoff.executor")


def slug(title: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return words[:40].rstrip("-") or "work"


async def prepare(run: Run, workspaces: Workspaces, template_names: list[str],
                  trigger_label: str) -> Prepared:
    """Check out the job's branch and gather its settings and spec inputs."""
    job, gh = run.job, run.gh
    issue = await gh.get_issue(job.issue_number)
    repo = await gh.get_repo()
    base = str(repo["default_branch"])
    branch = job.branch or f"{AGENT_BRANCH_PREFIX}{job.issue_number}-{slug(issue['title'])}"
    await run.write(branch=branch)
    clone_url = str(repo["clone_url"])
    co = await workspaces.checkout(job.id, job.repo, branch, base, clone_url, await gh.token())
    run.mark("workspace")
    base_sha = await co.rev(f"refs/remotes/origin/{base}")
    start_sha = await co.rev("HEAD")
    config = await read_config(co, base_sha, template_names, gh)
    comments = await gh.list_comments(job.issue_number)
    writers = await writers_among(gh, comments)
    issue, snapshot, left_out = await approved_issue(run, issue)
    inputs = build_inputs(job.repo, issue, comments, writers, trigger_label,
                          await repo_instructions(co, base_sha))
    inputs.excluded += left_out
    run.mark("spec inputs")
    return Prepared(co, clone_url, issue, base, base_sha, start_sha, branch, config, inputs,
                    snapshot)


async def read_config(co: Checkout, base_sha: str, template_names: list[str],
                      gh: RepoClient) -> RepoConfig:
    """``.github/handoff.yml`` as the default branch has it, over the organisation's
    defaults; a bad one ends the job."""
    try:
        own = await co.read_blob(base_sha, CONFIG_PATH)
        return parse_repo_config(await org_defaults(gh, own), template_names)
    except RepoConfigError as exc:
        raise JobFailed(Failure.CONFIG_ERROR, str(exc)) from exc


async def org_defaults(gh: RepoClient, own: str | None) -> str | None:
    """The repository's settings text with the organisation's defaults beneath it: those
    its ``_extends`` names (an error if they cannot be read), or, when it has no file, the
    owner's ``.github`` repository's (if there are any and the App can read them)."""
    found = extends_target(own)
    if found is None:
        return own
    target, asked = found
    owner = gh.owner
    if "/" in target:
        other, target = target.split("/", 1)
        if other.lower() != owner.lower():
            raise RepoConfigError(f"`_extends: {other}/{target}`: only a repository of "
                                  f"{owner} may give its settings")
    try:
        defaults = await gh.app.repo(gh.installation_id, f"{owner}/{target}").read_file(
            CONFIG_PATH)
    except GitHubApiError as exc:
        if asked:
            raise RepoConfigError(f"`_extends: {target}`: cannot read {owner}/{target}'s "
                                  f"`{CONFIG_PATH}` ({exc}); install the App on it") from exc
        log.info("no organisation defaults for %s: %s", gh.full_name, exc)
        return own
    if defaults is None:
        if asked:
            raise RepoConfigError(f"`_extends: {target}`: {owner}/{target} has no "
                                  f"`{CONFIG_PATH}`")
        return own
    return with_defaults(own, defaults)


async def approved_issue(run: Run, issue: dict[str, Any]
                         ) -> tuple[dict[str, Any], dict[str, str] | None, list[str]]:
    """The issue as it was handed over, with later edits by writers only; its title and body
    alone (None for a job recorded before snapshots existed: the live text is used); and the
    edits left out."""
    snap = run.job.context.get("issue_snapshot")
    if not snap:
        return issue, None, []
    text, left_out = dict(snap), []
    for change in run.job.context.get("edits", []):
        if await run.gh.permission(change["by"]) in WRITE_ROLES:
            text = {"title": change["title"], "body": change["body"]}
        else:
            count = int(change.get("count", 1))
            left_out.append(wording.EDITS_LEFT_OUT.format(count=count, login=change["by"])
                            if count > 1 else wording.EDIT_LEFT_OUT.format(login=change["by"]))
    live = {"title": issue.get("title") or "", "body": issue.get("body") or ""}
    if live != text and not left_out:
        left_out.append(wording.LATER_CHANGE_LEFT_OUT)
    return {**issue, **text}, text, left_out


async def writers_among(gh: RepoClient, comments: list[dict[str, Any]]) -> set[str]:
    """The comments' authors who have write access (only their words steer the agent)."""
    authors = {str((c.get("user") or {}).get("login", "")) for c in comments}
    return {a for a in authors if a and await gh.permission(a) in WRITE_ROLES}
