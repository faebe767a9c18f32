"""What each step of a job returns, for the runner to hand to the next: ``prepare`` a
``Prepared``, ``start_sandbox`` a ``Sandboxed``, ``write_spec`` a ``Briefed``, ``run_agent`` a
``Ran``, ``judge`` a ``Judged``, ``deliver`` a ``Pushed``. A step takes what it needs as
arguments and reads nothing an earlier step left in the job's record: what is stored there
(``record`` below) is for the job's next attempt, the dashboard and the reporter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.executor.agent.loop import AgentResult
from bot.executor.gitops import Checkout
from bot.executor.repo_config import RepoConfig
from bot.executor.sandbox import Sandbox
from bot.jobs.changes import FileChange
from bot.jobs.inputs import SpecInputs
from bot.jobs.record import JobRecord
from bot.jobs.testreport import TestReport
from bot.jobs.verdict import Verdict


@dataclass(frozen=True)
class Prepared:
    """The job's checkout, and what was read for it from the default branch's git objects."""

    checkout: Checkout
    clone_url: str  # the URL the API gave: the only one pushed to
    issue: dict[str, Any]  # the issue as handed over (later edits by writers only)
    base: str  # the default branch
    base_sha: str
    start_sha: str  # the job's branch before the agent
    branch: str
    config: RepoConfig
    inputs: SpecInputs
    snapshot: dict[str, str] | None = None  # the issue as handed over, if the job kept it

    def record(self, record: JobRecord) -> None:
        """What a job that goes on later needs of it: its branch, base and the issue."""
        d = record.delivery
        d.branch, d.base, d.base_sha = self.branch, self.base, self.base_sha
        if self.snapshot is not None:
            record.inputs.issue_snapshot = self.snapshot


@dataclass(frozen=True)
class Sandboxed:
    """The job's sandbox, its setup run (``setup`` is the command, "" for none)."""

    sandbox: Sandbox
    setup: str = ""
    warning: str = ""  # a setup that failed but did not end the job (the verdict says so)


@dataclass(frozen=True)
class Briefed:
    """The spec the agent is given, the template it came from, and the review threads to
    answer once the change is delivered."""

    spec: str
    template: str
    answer: list[int] | None = None  # None: no threads were read for this job

    def record(self, record: JobRecord, inputs: SpecInputs) -> None:
        record.inputs.template, record.inputs.criteria = self.template, inputs.criteria
        record.inputs.seen, record.inputs.excluded = list(inputs.seen), list(inputs.excluded)
        if self.answer is not None:
            record.inputs.review_threads = self.answer


@dataclass(frozen=True)
class Ran:
    """The agent's run: how it ended, and where its transcript is."""

    outcome: AgentResult
    transcript: Path | None

    def record(self, record: JobRecord) -> None:
        record.agent.spend, record.summary = self.outcome.spend.stored(), self.outcome.summary


@dataclass(frozen=True)
class Judged:
    """The tests after the change against the base's, and the verdict on them."""

    verdict: Verdict
    base: TestReport
    before: TestReport
    after: TestReport | None
    after_line: str  # the after run's one line (the base's when its config was wrong)

    def record(self, record: JobRecord) -> None:
        t = record.tests
        t.base, t.base_report = self.base.line(), self.base
        t.before, t.before_report = self.before.line(), self.before
        t.after, t.after_report = self.after_line, self.after
        record.verdict = self.verdict


@dataclass(frozen=True)
class Pushed:
    """The commit pushed to the job's branch, and the files it changes from the fork point."""

    head: str
    files: list[FileChange]
    summary: str  # the agent's, with what a /rebase resolved before it
