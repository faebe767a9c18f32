"""What a delivered job writes on its pull request: the body (accumulated over iterations),
the review summary, replies to review threads, and the check run."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from bot.github.client import GitHubApiError, RepoClient
from bot.github.naming import CHECK_NAME, looks_like_bot
from bot.jobs.changes import TEST_PATH, FileChange
from bot.jobs.inputs import SpecInputs
from bot.jobs.record import Iteration, JobRecord
from bot.jobs.store import Job
from bot.jobs.verdict import Verdict
from bot.reporter import wording
from bot.reporter.checks import details
from bot.reporter.markdown import code, plain, quote
from bot.reporter.status import job_url
from bot.reporter.templates import Templates

log = logging.getLogger("handoff.reporter")
REVIEWERS_MARKER = "<!-- handoff:for-reviewers -->"  # hidden in the "For reviewers" comment
RISKY = re.compile(r"(^|/)(\.github/|Dockerfile|setup\.py|pyproject\.toml|package(-lock)?\.json"
                   r"|requirements[^/]*\.txt|.*\.lock$|Makefile|.*\.ya?ml$)")
EXPECTATION_CHANGED = "an existing test's expectation was changed: check it"


@dataclass
class Delivered:
    """A pushed change, as the pull request's writers need it (its summary and commit are
    the record's)."""

    job: Job
    record: JobRecord
    inputs: SpecInputs
    title: str
    files: list[FileChange]


class PullRequestWriter:
    """Writes one job's pull request and what goes with it."""

    def __init__(self, gh: RepoClient, templates: Templates, public_url: str = "") -> None:
        self.gh, self.templates, self.public_url = gh, templates, public_url

    def body(self, d: Delivered, verdict: Verdict, iterations: list[Iteration],
             spend: dict[str, Any]) -> str:
        r = d.record
        return self.templates.render(
            "summary", issue=d.inputs.issue, summary=r.summary, iterations=iterations,
            criteria=evidence_across(d.inputs.criteria, [it.summary for it in iterations],
                                     [t for it in iterations for t in it.shown]),
            base_sha=r.delivery.base_sha, head_sha=r.delivery.head_sha, tests_base=r.tests.base,
            tests_before=r.tests.before, tests_after=r.tests.after,
            regression=verdict.regression, verdict=verdict, test_command=r.tests.command,
            test_command_reason=r.tests.command_reason, setup_command=r.setup.command,
            setup_reason=r.setup.reason, setup_warning=r.setup.warning,
            setup_offline=r.setup.offline, spend=spend,
            model=r.agent.model, inputs_seen=d.inputs.seen, inputs_excluded=d.inputs.excluded,
            requested_by=d.job.requested_by, egress_denied=r.agent.egress_denied, job_id=d.job.id,
            job_url=job_url(self.public_url, d.job.id))

    async def pull_request(self, d: Delivered, verdict: Verdict,
                           iterations: list[Iteration], spend: dict[str, Any],
                           draft: bool) -> dict[str, Any]:
        """Open the pull request, or update the one this branch has."""
        body = self.body(d, verdict, iterations, spend)
        gh, branch = self.gh, d.record.delivery.branch
        existing = await gh.get_pull(d.job.pr_number) if d.job.pr_number else \
            await gh.find_pull(branch)
        if existing:
            return await gh.update_pull(int(existing["number"]), body=body)
        try:
            return await gh.create_pull(title=plain(d.title, 256), head=branch,
                                        base=d.record.delivery.base, body=body, draft=draft)
        except GitHubApiError as exc:  # a PR created by an earlier, interrupted attempt
            found = await gh.find_pull(branch)
            if found is None:
                raise
            log.info("PR already existed: %s", exc)
            return await gh.update_pull(int(found["number"]), body=body)

    async def review_summary(self, number: int, files: list[FileChange], verdict: Verdict
                             ) -> None:
        """The one "For reviewers" comment of the pull request: posted by the first
        iteration, edited by the next ones (found by its hidden marker)."""
        check_first, risks = review_notes(files, verdict.regression)
        risks = [r for r in verdict.risks if r not in risks] + risks
        body = self.templates.render("review_summary", check_first=check_first, risks=risks,
                                     files=files) + f"\n{REVIEWERS_MARKER}"
        for comment in await self.gh.list_comments(number):
            if REVIEWERS_MARKER in str(comment.get("body") or "") and \
                    looks_like_bot(comment.get("user")):
                await self.gh.update_comment(int(comment["id"]), body)
                return
        await self.gh.create_comment(number, body)

    async def answer_review(self, d: Delivered) -> None:
        """Reply to each review thread the iteration took up, with its numbered answer."""
        assert d.job.pr_number is not None
        summary, head = d.record.summary, d.record.delivery.head_sha
        lines = summary.splitlines()
        for index, comment_id in enumerate(d.record.inputs.review_threads, start=1):
            answer = next((ln for ln in lines if re.match(rf"\s*{index}[.):]", ln)), summary)
            await self.gh.reply_review_comment(d.job.pr_number, comment_id, wording.ADDRESSED
                                               .format(head=head[:7],
                                                       answer=quote(answer.strip()[:2000])))

    async def check_run(self, d: Delivered, verdict: Verdict, started_on: str = "") -> int:
        """The verdict as Handoff's check run: the one in progress since the job started on
        ``started_on`` (``record.delivery.check_run_open``) completes with it, and the pushed
        commit gets its own; the id of the pushed commit's run."""
        r = d.record
        summary = self.templates.render(
            "check_run", verdict=verdict, tests_base=r.tests.base, tests_before=r.tests.before,
            tests_after=r.tests.after, test_command=r.tests.command,
            test_command_reason=r.tests.command_reason)
        output = {"title": verdict.title, "summary": summary[:60_000]}
        opened = r.delivery.check_run_id if r.delivery.check_run_open else None
        if opened is not None:
            await self.gh.update_check_run(opened, status="completed",
                                           conclusion=verdict.conclusion, output=output)
            if r.delivery.head_sha == started_on:
                return opened
        check = await self.gh.create_check_run(
            name=CHECK_NAME, head_sha=r.delivery.head_sha, status="completed",
            conclusion=verdict.conclusion, external_id=str(d.job.id), output=output,
            **details(self.public_url, d.job))
        return int(check["id"])

    def done(self, pr_url: str, verdict: Verdict, spend_line: str) -> str:
        """The status comment's last word on a delivered job."""
        return self.templates.render("status_done", pr_url=pr_url, verdict=verdict,
                                     spend=spend_line).strip()


WORD = re.compile(r"[a-z0-9]+")
NOT_TOPICAL = {"test", "tests", "should", "the", "and", "with", "when", "returns", "return",
               "is", "it", "of", "to", "a", "an", "in", "on", "for", "spec", "case"}


def claims(criteria: list[str], summary: str) -> list[str]:
    """For each criterion, the agent's summary line that claims it, or ""."""
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
        out.append(found or "")
    return out


def _topics(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if len(w) >= 3 and w not in NOT_TOPICAL}


def shown_by(criterion: str, claim: str, passing: list[str]) -> str:
    """A test that passed after the change (newly, or added) and exercises the criterion: one
    the agent's claim names, else one whose name shares a word with it; "" when none does."""
    for test in passing:
        short = test.rsplit(" > ", 1)[-1] if " > " in test else re.split(r"[.:]+", test)[-1]
        if short and re.search(rf"\b{re.escape(short)}\b", claim):
            return test
    topics = _topics(criterion)
    return next((t for t in passing if topics & _topics(t)), "")


def evidence_across(criteria: list[str], summaries: list[str],
                    passing: list[str]) -> list[dict[str, Any]]:
    """Each criterion, met only when a named test that passed shows it; what the agent
    claimed for it otherwise (the first iteration's summary line that claims it)."""
    said = [""] * len(criteria)
    for summary in summaries:
        said = [have or found for have, found in zip(said, claims(criteria, summary),
                                                     strict=True)]
    out = []
    for text, claim in zip(criteria, said, strict=True):
        test = shown_by(text, claim, passing)
        out.append({"text": text, "met": bool(test), "claim": claim,
                    "evidence": f"shown by {code(test)} passing" if test else ""})
    return out


def review_notes(files: list[FileChange], regression: bool) -> tuple[str, list[str]]:
    """What a reviewer should check first, and the risky parts of the change."""
    sources = [f for f in files if not TEST_PATH.search(f.path)]
    changed_sources = [f for f in sources if not f.new]  # a fix before a new script beside it
    biggest = max(changed_sources or sources or files, key=lambda f: f.added + f.removed)
    check_first = (f"{code(biggest.path)}, the largest change "
                   f"(+{biggest.added} −{biggest.removed})")
    risks = []
    if regression:
        risks.append("tests that passed on the base commit fail after the change")
    risks += [f"{code(f.path)}: {EXPECTATION_CHANGED}" for f in files if f.expectation_changed]
    risks += [f"{code(f.path)} is build, dependency or CI configuration" for f in files
              if RISKY.search(f.path)]
    removed = [f for f in files if f.removed > f.added and f.removed >= 20]
    risks += [f"{code(f.path)} loses {f.removed} lines" for f in removed]
    if not any(TEST_PATH.search(f.path) for f in files):
        risks.append("no test file was added or changed")
    return check_first, risks or ["none found by Handoff's checks; read the diff all the same"]
