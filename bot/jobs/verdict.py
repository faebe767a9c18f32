"""The verdict on an agent's change, as the executor decides it (``bot.executor.verdict``) and
the reporter states it (check run, PR body, status comment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Verdict:
    """What the check run concludes, what the PR states, and where the status comment ends."""

    conclusion: str  # success | failure | neutral
    title: str
    stage: str
    category: str = ""
    tests_run: bool = True
    regression: bool = False
    evidence: bool = False
    risks: list[str] = field(default_factory=list)
    new_failures: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
