"""A ``/rebase``'s conflicted merge before it is committed: no conflict marker may be left, and
the PR's iteration names the files resolved."""

from __future__ import annotations

import re

from bot.executor.gitops import Checkout
from bot.jobs.outcome import JobFailed
from bot.jobs.states import Failure
from bot.reporter import wording
from bot.reporter.markdown import code

MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.MULTILINE)


def unresolved(co: Checkout, files: list[str]) -> list[str]:
    """The conflicted files that still hold a conflict marker."""
    left = []
    for path in files:
        target = co.work_tree / path
        if target.is_symlink() or not target.is_file():
            continue  # deleting a file is a resolution too
        if MARKER.search(target.read_text(errors="replace")):
            left.append(path)
    return left


def resolved(co: Checkout, files: list[str], base: str) -> str:
    """End the job if the agent left a conflict marker in ``files`` (a /rebase's conflicted
    ones), else what its summary says first of the conflicts it resolved ("" for none)."""
    if not files:
        return ""
    if left := unresolved(co, files):
        raise JobFailed(Failure.AGENT_ERROR, wording.CONFLICTS_LEFT.format(
            files=", ".join(code(p) for p in left)))
    return wording.RESOLVED.format(base=base, files=", ".join(code(p) for p in files)) + "\n\n"
