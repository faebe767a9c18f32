"""Benchmark: from a failing check's webhook to the CI fix's first model call and to its push.

Runs the whole of Handoff on 127.0.0.1 (GitHub simulator with its scripted CI, receiver,
worker, Podman sandbox, scripted model). Each round hands over a new issue; once its pull
request is open, the CI fails a ``lint`` check on the agent's commit and Handoff's ``ci-fix``
iteration pushes a fix. Measured per round, from when the simulator sent the failing
``check_run`` webhook:

- to the fix's first model call (Handoff's own overhead: delivery, queue, reading the checks,
  the Actions log, the workspace, the sandbox, the spec);
- to the fix's push, less the agent's own time (its model calls and tool runs).

Target: under 2 s of Handoff's own overhead for each.

Usage: python bench/ci_loop.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy/sandbox/containers.conf"))

from devkit.stack import Stack, stack  # noqa: E402

REPO = "acme/site"
FILES = {"README.md": "# site\n", "NOTES.md": "notes\n"}
LINT = {"result": "fail", "summary": "1 problem",
        "annotations": [{"path": "README.md", "start_line": 1, "message": "MD041"}],
        "log": "Run lint\n##[error]README.md:1 MD041 first line\n"}


def edit(n: int, old: str, new: str) -> dict[str, object]:
    """One turn: an edit of README.md and finish, so each model call is one step."""
    return {"tools": [{"tool": "edit", "args": {"path": "README.md", "old_text": old,
                                                "new_text": new}},
                      {"tool": "finish", "args": {"summary": f"Round {n}."}}]}


def script(rounds: int) -> list[dict[str, object]]:
    turns: list[dict[str, object]] = []
    for n in range(rounds):
        turns += [edit(n, "# site", f"# site {n}"), edit(n, f"# site {n}", "# site")]
    return turns


async def one_round(s: Stack, n: int) -> dict[str, float]:
    number = s.label_new_issue(REPO, f"Title {n}", "Change the title.")
    first = await s.wait_job(lambda j: j.issue_number == number and j.kind == "implement")
    assert first.state == "succeeded", first.reason
    branch = first.result.delivery.branch
    s.sim.ci.script(REPO, {"lint": [LINT, "pass"]}, branch=branch)
    s.sim.ci.run_branch(REPO, branch)  # the CI runs on the PR's commit, and fails
    job = await s.wait_job(lambda j: j.issue_number == number and j.kind == "ci-fix")
    assert job.state == "succeeded", job.reason
    red = next(d for d in s.sim.world.deliveries if d.event == "check_run" and
               d.action == "completed" and json.loads(d.payload)["check_run"]
               ["check_suite"]["head_branch"] == branch)
    sent = red.attempts[0]["at"] - red.attempts[0]["duration"]
    model = next(t for t in s.model.times if t > sent)
    pushed = next(t for (repo, b, _, t) in s.sim.ci.pushes if b == branch and t > sent)
    agent = job.result.timings.get("agent", 0.0) + job.result.timings.get("tests after", 0.0)
    return {"to first model call": model - sent, "to push, less the agent": pushed - sent - agent,
            "agent": agent, "  webhook to queued": job.created_at - sent,
            "  queued to claimed": (job.started_at or job.created_at) - job.created_at,
            **{f"  {k}": v for k, v in job.result.timings.items()}}


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="handoff-ci-bench-") as tmp:
        async with stack(Path(tmp), script(args.rounds)) as s:
            s.sim.add_repo(REPO, FILES)
            s.sim.ci.delay = 0.0
            rows = [await one_round(s, n) for n in range(args.rounds)]
    keys = list(rows[0])
    print(f"{'seconds':<28}" + "".join(f"{'round ' + str(n + 1):>10}" for n in range(len(rows)))
          + f"{'median':>10}")
    for key in keys:
        values = [r.get(key, 0.0) for r in rows]
        print(f"{key:<28}" + "".join(f"{v:>10.3f}" for v in values)
              + f"{statistics.median(values):>10.3f}")
    print("target: < 2 s each of 'to first model call' and 'to push, less the agent'")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
