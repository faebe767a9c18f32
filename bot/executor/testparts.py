"""A test command in parts, one per folder: the workspaces of an npm monorepo, the modules of
a Go workspace or of a repository with several ``go.mod`` files.

Written as a shell line anyone can run, ``(cd a && go test -json ./...); (cd b && npm test)``
(a part with no ``cd`` runs at the root), and read back here: each part runs on its own with
its own report, and the reports are summed, every test named with its folder (``a > name``;
Go's tests already carry their module's import path) so one test name in two folders stays
two tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.jobs.testreport import TestReport
from bot.reporter.markdown import code

SAFE_DIR = re.compile(r"[\w@+-][\w.@+-]*(/[\w@+-][\w.@+-]*)*")  # relative, no `..`, no shell
PART = re.compile(rf"\(cd (?P<dir>{SAFE_DIR.pattern}) && (?P<cmd>[^();]+)\)|(?P<root>[^();]+)")
MAX_PARTS = 50


@dataclass(frozen=True)
class Part:
    """One folder's command."""

    directory: str  # "" for the repository's root
    command: str


def safe_dir(path: str) -> bool:
    """A folder a part may name: relative, inside the repository, nothing a shell reads."""
    return bool(SAFE_DIR.fullmatch(path)) and ".." not in path.split("/")


def listed(folders: list[str]) -> str:
    """Folders named in a reason: the first five, and how many more."""
    shown = ", ".join(code(f) for f in folders[:5])
    return shown + (f" and {len(folders) - 5} more" if len(folders) > 5 else "")


def joined(parts: list[Part]) -> str:
    """The shell line for these parts."""
    return "; ".join(f"(cd {p.directory} && {p.command})" if p.directory else p.command
                     for p in parts)


def split(command: str) -> list[Part] | None:
    """The parts of a command written as ``joined`` writes it (at least one with a ``cd``),
    else None: any other command runs as one."""
    pieces = [p.strip() for p in command.strip().split("; ")]
    if len(pieces) > MAX_PARTS:
        return None
    parts = []
    for piece in pieces:
        if not (m := PART.fullmatch(piece)) or (m["dir"] and not safe_dir(m["dir"])):
            return None
        parts.append(Part(m["dir"] or "", (m["cmd"] or m["root"]).strip()))
    return parts if any(p.directory for p in parts) else None


def combine(command: str, reports: list[tuple[Part, TestReport]]) -> TestReport:
    """One report for the parts' reports: counts summed, tests named with their folder; a
    part that could not run is an error named by its folder beside the others' tests."""
    ran = [(p, r) for p, r in reports if r.ran and r.counts]
    stopped = [(p, r) for p, r in reports if r.state in ("config-error", "could-not-run")
               or (r.ran and not r.counts and not r.ok)]
    if timed := next((r for _, r in reports if r.state == "timed-out"), None):
        return _as(command, timed, _where(reports, timed))
    if not ran:
        first = next((r for _, r in stopped), None) or reports[0][1]
        return _as(command, first, _where(reports, first))
    out = TestReport(command, "ran", ok=all(r.ok for _, r in ran) and not stopped,
                     runner=" + ".join(dict.fromkeys(r.runner for _, r in ran)),
                     complete=all(r.complete for _, r in ran))
    out.counts = {k: 0 for k in ("passed", "failed", "errors", "skipped")}
    for part, report in ran:
        prefix = _prefix(part, report)
        for key, n in report.counts.items():
            out.counts[key] = out.counts.get(key, 0) + n
        out.outcomes.update({prefix + t: o for t, o in report.outcomes.items()})
        out.failing += [prefix + t for t in report.failing]
    for part, _ in stopped:
        name = part.directory or "."
        out.outcomes[name] = "error"
        out.failing.append(name)
        out.counts["errors"] += 1
    bad = [(p, r) for p, r in reports if not r.ok]
    out.exit_code = next((r.exit_code for _, r in bad), 0)
    where = bad[0] if bad else reports[-1]
    out.detail = f"{where[0].directory or '.'}: {where[1].line()}"[:300]
    return out


def _prefix(part: Part, report: TestReport) -> str:
    """Go names a test by its package's import path, which names its module already."""
    return "" if report.runner == "go test" or not part.directory else f"{part.directory} > "


def _where(reports: list[tuple[Part, TestReport]], report: TestReport) -> str:
    return next(p.directory or "." for p, r in reports if r is report)


def _as(command: str, report: TestReport, where: str) -> TestReport:
    """A part's report standing for the whole run, its detail naming the part's folder."""
    return TestReport(command, report.state, ok=False, exit_code=report.exit_code,
                      runner=report.runner, detail=f"{where}: {report.detail}"[:300],
                      needs=report.needs)
