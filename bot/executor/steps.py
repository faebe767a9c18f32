"""What each step of a job returns, for the runner to hand to the next: ``prepare`` a
``Prepared``, ``start_sandbox`` a ``Sandboxed``, ``judge`` a ``Judged``, ``deliver`` a
``Pushed``. A step takes what it needs as arguments; nothing is left in ``Run`` for later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.executor.gitops import Checkout
from bot.executor.repo_config import RepoConfig
from bot.executor.sandbox import Sandbox
from bot.jobs.changes import FileChange
from bot.jobs.inputs import SpecInputs
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


@dataclass(frozen=True)
class Sandboxed:
    """The job's sandbox, its setup run (``setup`` is the command, "" for none)."""

    sandbox: Sandbox
    setup: str = ""


@dataclass(frozen=True)
class Judged:
    """The tests after the change against the base's, and the verdict on them."""

    verdict: Verdict
    base: TestReport
    before: TestReport
    after: TestReport | None


@dataclass(frozen=True)
class Pushed:
    """The commit pushed to the job's branch, and the files it changes from the fork point."""

    head: str
    files: list[FileChange]
