"""The whole conversation of an agent pull request, for an iteration's spec: the PR's
comments, its reviews, and every review thread with its replies and the code it points at.

Each entry names who wrote it and whether they may steer the agent (write access). What
others wrote stays out of the spec, as on issues: the entry says only that a comment by
@someone was left out. Bots' comments (Handoff's own included) are not part of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.executor.hidden import strip_hidden
from bot.github.client import WRITE_ROLES, RepoClient
from bot.github.naming import looks_like_bot
from bot.reporter.markdown import code

MAX_HUNK_LINES = 20  # the end of a diff hunk: the lines above the one commented on
MAX_TEXT = 8_000  # one comment's text in the spec


@dataclass
class Said:
    """One comment, as the spec shows it: empty ``body`` when left out."""

    id: int
    author: str
    steers: bool
    body: str
    request: bool = False  # the comment that asked for this iteration

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "author": self.author, "steers": self.steers,
                "body": self.body, "request": self.request}


@dataclass
class Thread:
    """A review thread: the code it points at, its first comment and the replies."""

    id: int
    path: str
    line: int | None
    hunk: str
    said: list[Said] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "line": self.line, "hunk": self.hunk,
                "said": [s.as_dict() for s in self.said],
                "request": any(s.request for s in self.said)}


@dataclass
class Discussion:
    """The pull request's conversation, and the comments left out of it."""

    comments: list[Said] = field(default_factory=list)
    reviews: list[Said] = field(default_factory=list)
    threads: list[Thread] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def thread_of(self, comment_id: int) -> Thread | None:
        return next((t for t in self.threads if any(s.id == comment_id for s in t.said)),
                    None)

    def seen(self) -> list[str]:
        """What of it the agent saw, as the PR body lists its inputs."""
        out = [f"PR comment by @{c.author}" for c in self.comments if c.steers]
        out += [f"review by @{r.author}" for r in self.reviews if r.steers]
        for t in self.threads:
            authors = sorted({s.author for s in t.said if s.steers})
            if authors:
                out.append(f"review thread on {code(t.path)} by "
                           + ", ".join(f"@{a}" for a in authors))
        return list(dict.fromkeys(out))

    def as_dict(self) -> dict[str, Any]:
        return {"comments": [c.as_dict() for c in self.comments],
                "reviews": [r.as_dict() for r in self.reviews],
                "threads": [t.as_dict() for t in self.threads]}


def hunk_tail(hunk: str | None) -> str:
    """The last lines of a review comment's diff hunk (the commented line is the last)."""
    return "\n".join(str(hunk or "").splitlines()[-MAX_HUNK_LINES:])


class Gatherer:
    """Reads one pull request's conversation, asking each author's role once."""

    def __init__(self, gh: RepoClient, request_ids: set[int]) -> None:
        self.gh, self.request_ids = gh, request_ids
        self.excluded: list[str] = []

    async def said(self, item: dict[str, Any], what: str) -> Said | None:
        """The comment as the spec shows it; None for bots and empty comments."""
        user = item.get("user")
        text = strip_hidden(item.get("body"))[:MAX_TEXT].strip()
        if looks_like_bot(user) or not text:
            return None
        author = str((user or {}).get("login", ""))
        steers = await self.gh.permission(author) in WRITE_ROLES
        if not steers:
            self.excluded.append(f"{what} {item.get('id')} by @{author}")
        return Said(int(item["id"]), author, steers, text if steers else "",
                    int(item["id"]) in self.request_ids)

    async def gather(self, number: int) -> Discussion:
        out = Discussion()
        for item in await self.gh.list_comments(number):
            if said := await self.said(item, "PR comment"):
                out.comments.append(said)
        for item in await self.gh.reviews(number):
            if said := await self.said(item, "review"):
                out.reviews.append(said)
        threads: dict[int, Thread] = {}
        for item in sorted(await self.gh.review_comments(number), key=lambda c: int(c["id"])):
            root = int(item.get("in_reply_to_id") or item["id"])
            if root not in threads:
                threads[root] = Thread(root, str(item.get("path") or ""),
                                       item.get("line") or item.get("original_line"),
                                       hunk_tail(item.get("diff_hunk")))
            if said := await self.said(item, "review comment"):
                threads[root].said.append(said)
        out.threads = [t for t in threads.values() if t.said]
        out.excluded = self.excluded
        return out


async def gather(gh: RepoClient, number: int, request_ids: set[int]) -> Discussion:
    """The conversation on pull request ``number``; ``request_ids`` are the comments that
    asked for this iteration (marked as the request)."""
    return await Gatherer(gh, request_ids).gather(number)
