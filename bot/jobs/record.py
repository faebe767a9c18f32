"""The job record: what a job found, did and decided, stored with the job as JSON.

One typed structure read by the worker, the reporter, the dashboard and the next iteration,
instead of a dict of loose keys. ``version`` names its shape; rows written by an older shape
are upgraded by ``JobRecord.load`` (unknown keys are kept, so nothing stored is lost).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

VERSION = 1


class JobRecord(BaseModel):
    """Everything a job records as it goes; every field has an empty default."""

    model_config = ConfigDict(extra="allow", validate_assignment=False)

    version: int = VERSION
    # Announcing and acknowledging (the worker and the reporter).
    acknowledged: bool = False
    announced: bool = False
    position: int | None = None
    requester_checked: bool = False
    status_comment_id: int | None = None
    # The branch and its commits.
    branch: str = ""
    base: str = ""
    base_sha: str = ""
    head_sha: str = ""
    pushed_branch: str = ""
    # Committed before its push and kept in the worker's mirror: a job that goes on later on
    # this machine (GitHub was away, a restart) pushes it instead of running the agent again.
    kept_sha: str = ""
    wip_branch: str = ""
    # What was delivered.
    pr_number: int | None = None
    pr_url: str = ""
    check_run_id: int | None = None
    final_stage: str = ""
    final_detail: str = ""
    # The inputs and the agent's run.
    issue_snapshot: dict[str, str] = Field(default_factory=dict)
    inputs_seen: list[str] = Field(default_factory=list)
    inputs_excluded: list[str] = Field(default_factory=list)
    criteria: list[str] = Field(default_factory=list)
    review_threads: list[int] = Field(default_factory=list)
    template: str = ""
    model: str = ""
    transcript: str = ""
    summary: str = ""
    spend: dict[str, Any] = Field(default_factory=dict)
    # While the agent runs: its conversation and work tree as of its last step (see
    # bot/executor/resume.py), so a job handed back or taken over goes on from there.
    agent_checkpoint: dict[str, Any] = Field(default_factory=dict)
    egress_denied: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    # Setup, tests and the verdict.
    setup_command: str = ""
    setup_reason: str = ""
    setup_warning: str = ""
    setup_offline: str = ""  # why the setup ran without network (the branch changed manifests)
    test_command: str = ""
    test_command_reason: str = ""
    tests_base: str = ""
    tests_before: str = ""
    tests_after: str = ""
    baseline_report: dict[str, Any] = Field(default_factory=dict)
    tests_before_report: dict[str, Any] = Field(default_factory=dict)
    tests_after_report: dict[str, Any] = Field(default_factory=dict)
    verdict: dict[str, Any] = Field(default_factory=dict)
    regression: bool = False
    iterations: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def load(cls, stored: dict[str, Any] | JobRecord | None) -> JobRecord:
        """A record from a stored row (any version so far; ``None`` and ``{}`` are empty)."""
        if isinstance(stored, JobRecord):
            return stored.model_copy(deep=True)
        data = {k: v for k, v in (stored or {}).items() if v is not None}
        data["version"] = VERSION  # version 0 (no key) had the same fields, untyped
        return cls.model_validate(data)

    def dump(self) -> dict[str, Any]:
        """The JSON-ready dict stored in the job's row."""
        return self.model_dump(mode="json")

    def with_(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` applied (validated)."""
        return JobRecord.load({**self.dump(), **changes})
