"""What a spec is rendered from: the issue made safe, the writers' comments, the criteria and
the repository's instructions, and the record of what was left out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImageRef:
    """An image a reader of the issue sees, numbered in the order the spec shows them."""

    number: int
    url: str
    alt: str
    source: str  # "the issue" or "a comment by @login"


@dataclass
class SpecInputs:
    """Everything a spec is rendered from, and the record of what was left out."""

    repo: str
    issue: dict[str, Any]
    labels: list[str]
    comments: list[dict[str, str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)
    instructions: list[tuple[str, str]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # what the agent saw, as the PR lists it
    images: list[ImageRef] = field(default_factory=list)  # in the issue and kept comments
