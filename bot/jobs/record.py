"""The job record: what a job found, did and decided, stored with the job as JSON.

One typed structure read by the worker, the reporter, the dashboard and the next iteration:
how the job was announced at its top, then a sub-record per part of the job (its inputs, its
setup, its tests and verdict, the agent's run, its delivery, its iterations). ``version`` names
its shape; rows of an older shape are read by ``upgrade`` (the flat rows of versions 0 and 1),
the one place that allows keys this shape does not name.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from bot.jobs.cifix import CIRound
from bot.jobs.testreport import TestReport
from bot.jobs.verdict import Verdict

VERSION = 2


class Part(BaseModel):
    """A sub-record: typed, every field with an empty default."""

    model_config = ConfigDict(validate_assignment=False)


class Inputs(Part):
    """What the spec was made from, and what was left out."""

    issue_snapshot: dict[str, str] = Field(default_factory=dict)  # as handed over
    seen: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)
    criteria: list[str] = Field(default_factory=list)
    review_threads: list[int] = Field(default_factory=list)  # answered after the push
    conflicts: list[str] = Field(default_factory=list)  # a /rebase's conflicted files
    template: str = ""


class Spent(Part):
    """What the agent spent (``Spend.as_dict``)."""

    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    wall_seconds: float = 0.0


class Checkpoint(Part):
    """The agent's conversation and work tree as of its last step (see
    bot/executor/resume.py), so a job handed back or taken over goes on from there."""

    start_sha: str
    step: int
    spend: Spent
    messages: list[dict[str, JsonValue]]
    diff: str


class AgentRun(Part):
    """The agent's run."""

    model: str = ""
    transcript: str = ""
    spend: Spent = Field(default_factory=Spent)
    checkpoint: Checkpoint | None = None
    # host:port the egress proxy refused, grouped by why (proxy_server.KINDS, "unnamed")
    egress_denied: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("egress_denied", mode="before")
    @classmethod
    def _ungrouped(cls, value: Any) -> Any:
        """A record from before the kinds: every refusal was read as not on the allowlist."""
        return {"not-listed": value} if isinstance(value, list) and value else value or {}


class StepRun(Part):
    """One setup step as it ran: its name, how it ended and how long it took."""

    name: str
    ok: bool = False
    seconds: float = 0.0
    exit: str = ""  # CommandResult.describe()


class SetupRun(Part):
    """The setup in the sandbox: its command, why that one, and what went wrong."""

    command: str = ""
    reason: str = ""
    warning: str = ""
    offline: str = ""  # why it ran without network (the branch changed manifests)
    environment: str = ""  # "warm" (a kept environment, no setup) or "cold" (the setup ran)
    environment_reason: str = ""
    steps: list[StepRun] = Field(default_factory=list)  # the named steps that ran


class Tests(Part):
    """The test command and its runs: on the first iteration's base, before and after."""

    command: str = ""
    command_reason: str = ""
    base: str = ""  # each run's one line, as the PR and check run state it
    before: str = ""
    after: str = ""
    base_report: TestReport | None = None
    before_report: TestReport | None = None
    after_report: TestReport | None = None


class Delivery(Part):
    """The branch, its commits and what was delivered."""

    branch: str = ""
    base: str = ""
    base_sha: str = ""
    head_sha: str = ""
    pushed_branch: str = ""
    # Committed before its push and kept in the worker's mirror: a job that goes on later on
    # this machine (GitHub was away, a restart) pushes it instead of running the agent again.
    kept_sha: str = ""
    wip_branch: str = ""
    pr_number: int | None = None
    pr_url: str = ""
    check_run_id: int | None = None
    check_run_open: bool = False  # in progress since the job started (bot/reporter/checks.py)
    final_stage: str = ""
    final_detail: str = ""


class Iteration(Part):
    """One iteration of a pull request, as its body shows it."""

    job_id: int
    kind: str
    requested_by: str = ""
    feedback: str = ""
    summary: str = ""
    spend: Spent = Field(default_factory=Spent)
    template: str = ""
    tests_after: str = ""
    evidence: bool = False
    shown: list[str] = Field(default_factory=list)  # tests it fixed or added
    ci: CIRound | None = None  # a CI fix's round (without the checks' text)


class JobRecord(BaseModel):
    """Everything a job records as it goes; every field has an empty default."""

    model_config = ConfigDict(validate_assignment=False)

    version: int = VERSION
    # Announcing and acknowledging (the worker and the reporter).
    acknowledged: bool = False
    announced: bool = False
    position: int | None = None
    requester_checked: bool = False
    status_comment_id: int | None = None
    summary: str = ""  # the agent's own account of its change
    inputs: Inputs = Field(default_factory=Inputs)
    setup: SetupRun = Field(default_factory=SetupRun)
    agent: AgentRun = Field(default_factory=AgentRun)
    tests: Tests = Field(default_factory=Tests)
    verdict: Verdict | None = None
    delivery: Delivery = Field(default_factory=Delivery)
    iterations: list[Iteration] = Field(default_factory=list)
    # A ci-fix job: the failing checks it was given, its round, what it did not wait for.
    ci: CIRound | None = None
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per stage

    @model_validator(mode="before")
    @classmethod
    def _read_old_rows(cls, data: Any) -> Any:
        return upgrade(data) if isinstance(data, dict) else data

    @classmethod
    def load(cls, stored: dict[str, Any] | JobRecord | None) -> JobRecord:
        """A record from a stored row (any version so far; ``None`` and ``{}`` are empty)."""
        if isinstance(stored, JobRecord):
            return stored.model_copy(deep=True)
        return cls.model_validate(stored or {})

    def dump(self) -> dict[str, Any]:
        """The JSON-ready dict stored in the job's row."""
        return self.model_dump(mode="json")

    def with_(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` (top-level fields) applied, validated."""
        unknown = set(changes) - set(JobRecord.model_fields)
        if unknown:
            raise ValueError(f"not fields of a job record: {sorted(unknown)}")
        return JobRecord.load({**self.dump(), **changes})


# Where each key of a flat (version 0 or 1) row went.
FLAT: dict[str, tuple[str, str]] = {
    **{key: ("inputs", key) for key in ("issue_snapshot", "criteria", "review_threads",
                                          "template")},
    "inputs_seen": ("inputs", "seen"), "inputs_excluded": ("inputs", "excluded"),
    **{key: ("agent", key) for key in ("model", "transcript", "spend", "egress_denied")},
    "agent_checkpoint": ("agent", "checkpoint"),
    **{f"setup_{key}": ("setup", key) for key in ("command", "reason", "warning", "offline")},
    "test_command": ("tests", "command"), "test_command_reason": ("tests", "command_reason"),
    "tests_base": ("tests", "base"), "tests_before": ("tests", "before"),
    "tests_after": ("tests", "after"), "baseline_report": ("tests", "base_report"),
    "tests_before_report": ("tests", "before_report"),
    "tests_after_report": ("tests", "after_report"),
    **{key: ("delivery", key) for key in ("branch", "base", "base_sha", "head_sha",
                                            "pushed_branch", "kept_sha", "wip_branch",
                                            "pr_number", "pr_url", "check_run_id",
                                            "final_stage", "final_detail")},
}


def upgrade(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row in this version's shape: a flat row (version 0, untyped, or 1) has its
    keys moved into the sub-records, empty values (``None``, ``{}``) dropped; keys no
    version named are dropped too (``regression`` is the verdict's)."""
    if int(row.get("version") or 0) >= VERSION:
        return row
    out: dict[str, Any] = {"version": VERSION}
    for key, value in row.items():
        if value is None or value == {} or key in ("version", "regression"):
            continue
        if key in FLAT:
            part, name = FLAT[key]
            out.setdefault(part, {})[name] = value
        elif key == "iterations":
            out[key] = [{**it, "spend": {k: v for k, v in (it.get("spend") or {}).items()
                                         if k in Spent.model_fields}}
                        if isinstance(it, dict) else it for it in value]
        elif key in JobRecord.model_fields:
            out[key] = value
    return out
