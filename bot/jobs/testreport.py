"""What one run of a repository's tests showed: made by the executor's test runs, compared
for the verdict, stored with the job and stated by the reporter."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TestReport:
    """What one run of the tests showed.

    ``state``: ``ran`` (the suite ran: see ``ok`` and the counts), ``not-run`` (no command),
    ``config-error`` (the command or its runner is not there), ``no-tests`` (it ran and ran no
    test), ``could-not-run`` (the runner stopped before any test ran), ``timed-out``.
    """

    __test__ = False  # not a pytest test class

    command: str
    state: str
    ok: bool = False
    exit_code: int | None = None
    runner: str = ""
    counts: dict[str, int] = field(default_factory=dict)  # passed, failed, errors, skipped
    failing: list[str] = field(default_factory=list)  # names of failed and errored tests
    complete: bool = False  # whether ``failing`` names every failure
    outcomes: dict[str, str] = field(default_factory=dict)  # test id -> outcome (JUnit)
    detail: str = ""  # the cause when not run, or the output's last line
    needs: str = ""  # the service the tests could not reach (PostgreSQL on localhost:5432)

    @property
    def ran(self) -> bool:
        return self.state == "ran"

    def bad(self) -> int | None:
        if not self.counts:
            return None
        return self.counts.get("failed", 0) + self.counts.get("errors", 0)

    def line(self) -> str:
        """One line for the PR, the check run and the spec."""
        if self.state == "not-run":
            return "not run (no test command configured or found)"
        if self.state == "config-error":
            return f"not run: configuration error: {self.detail}"
        if self.state == "timed-out":
            return f"timed out: {self.detail}"
        if self.state == "no-tests":
            return f"ran no test ({self.detail})" if self.detail else "ran no test"
        if self.state == "could-not-run":
            return f"could not run: needs {self.detail}" if self.needs else \
                f"could not run: {self.detail}"
        verdict = "pass" if self.ok else "fail"
        if self.counts:
            parts = [f"{n} {'error' if k == 'errors' and n == 1 else k}"
                     for k in ("passed", "failed", "errors", "skipped")
                     if (n := self.counts.get(k, 0))]
            return f"{verdict} — {', '.join(parts) or 'no tests'}"
        return f"{verdict} — {self.detail}" if self.detail else verdict

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TestReport | None:
        if not data:
            return None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
