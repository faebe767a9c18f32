"""What a ``ci-fix`` job records: the failing checks it was given and its round, stored with the
job (``JobRecord.ci``) and carried in the pull request's iterations."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, JsonValue


class FailedCheck(BaseModel):
    """One check that failed on the commit, as the agent and the comments show it (its own
    text: hostile wherever it is posted)."""

    name: str
    conclusion: str
    app: str = ""
    title: str = ""
    summary: str = ""
    annotations: list[dict[str, JsonValue]] = Field(default_factory=list)
    log: str = ""  # an Actions job's log around its first error
    url: str = ""

    def why(self) -> str:
        """The first thing it reports: an annotation, else its title or summary."""
        if self.annotations:
            a = self.annotations[0]
            return f"{a.get('path') or ''}:{a.get('start_line') or ''}: {a.get('message') or ''}"
        return self.title or self.summary.split("\n", 1)[0] or self.conclusion

    def key(self) -> list[Any]:
        """What makes two failures the same one (its name, and what it reports)."""
        notes = sorted(f"{a.get('path')}|{a.get('message')}" for a in self.annotations)
        return [self.name, self.conclusion, notes or [self.title, self.summary]]


class CheckName(BaseModel):
    name: str
    conclusion: str


class CIRound(BaseModel):
    """One round of fixing a pull request's checks."""

    round: int
    max_fixes: int
    sha: str  # the commit whose checks failed
    checks: list[FailedCheck] = Field(default_factory=list)  # given to the agent
    key: list[JsonValue] = Field(default_factory=list)  # the failures, to tell a repeat
    names: list[CheckName] = Field(default_factory=list)
    why: str = ""  # the first failure's first report, for the PR body's line
    base_red: list[str] = Field(default_factory=list)  # failing on the base branch too
    pending: list[str] = Field(default_factory=list)  # not finished when the wait ran out
    waited_minutes: float = 0

    def shown(self) -> CIRound:
        """The round as the PR's iterations carry it (without the checks' text)."""
        return self.model_copy(update={"checks": []})
