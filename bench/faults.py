"""Fault suite: Handoff's processes under kills, stops, GitHub bursts, database trouble and
odd deliveries, each case checked as a person would see it on (simulated) GitHub.

Real processes on 127.0.0.1: the GitHub simulator, the scripted model server, `handoff serve`
(receiver, without a worker) and one or more `handoff worker` processes, Podman sandboxes,
SQLite or a throwaway PostgreSQL. Prints a table case -> expected -> observed; exits non-zero
when any case fails. A case that cannot run here is printed "not run" with the reason and
does not count as passed.

Usage: python bench/faults.py [--only NAME,...] [--port-base 18850]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy/sandbox/containers.conf"))

from bench.fuzz import deliveries  # noqa: E402
from bench.load import create_database, spawn, wait_http  # noqa: E402
from bot.jobs.store import Store  # noqa: E402
from devkit.stack import throwaway_postgres  # noqa: E402

SECRET = "faults-bench-secret"
REPO = "acme/team"
FINAL = ("succeeded", "failed", "cancelled")
FILES = {"app.py": "VALUE = 1\n", "README.md": "# team\n",
         ".github/handoff.yml": "test_command: python3 -c 'import app'\n"}


def script(sleep: float = 0) -> list[dict[str, Any]]:
    """The agent: optionally a long command, then the edit and the finish."""
    turns: list[dict[str, Any]] = []
    if sleep:
        turns.append({"tool": "bash", "args": {"command": f"sleep {sleep:g}"}})
    turns += [{"tool": "edit", "args": {"path": "app.py", "old_text": "VALUE = 1",
                                        "new_text": "VALUE = 2"}},
              {"tool": "finish", "args": {"summary": "VALUE is 2 now."}}]
    return turns


NO_CHANGE = [{"tool": "finish", "args": {"summary": "Nothing to change."}}]
# The change in step 0, a long command in step 1: a stop or kill in step 1 finds step 0 saved.
RESUMABLE = [{"tool": "edit", "args": {"path": "app.py", "old_text": "VALUE = 1",
                                       "new_text": "VALUE = 2"}},
             {"tool": "bash", "args": {"command": "sleep 12"}},
             {"tool": "bash", "args": {"command": "python3 -c 'import app'"}},
             {"tool": "finish", "args": {"summary": "VALUE is 2 now."}}]


@dataclass
class Result:
    case: str
    expected: str
    observed: str = ""
    ok: bool | None = None  # None: not run
    seconds: float = 0.0


@dataclass
class Cluster:
    """The processes of one case."""

    tmp: Path
    port: int
    db_url: str
    env: dict[str, str]
    sim: str = ""
    handoff: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    workers: int = 0

    def worker_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.env, **(extra or {})}

    def start_worker(self, extra: dict[str, str] | None = None) -> str:
        name = f"worker{self.workers}"
        self.workers += 1
        # Each worker its own data directory, as on its own machine (workspaces, mirrors).
        env = self.worker_env({"HANDOFF_DATA_DIR": str(self.tmp / f"data-{name}"),
                               **(extra or {})})
        self.procs[name] = spawn(["worker"], env, self.tmp / f"{name}.log")
        return name

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    async def store(self) -> Store:
        return await Store.open(self.db_url)

    async def state(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            return dict((await client.get(f"{self.sim}/_sim/state")).json())

    async def control(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{self.sim}/_sim/{path}", json=body)
            response.raise_for_status()
            return dict(response.json())

    async def clear_faults(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            (await client.delete(f"{self.sim}/_sim/faults")).raise_for_status()

    async def model_requests(self) -> int:
        port = int(self.sim.rsplit(":", 1)[1]) + 1
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/_scripted/requests")
            return int(answer.json()["requests"])

    async def issues(self, count: int) -> list[int]:
        await self.control("repos", {"full_name": REPO, "files": FILES})
        return [(await self.control("issues", {"repo": REPO, "title": f"Set VALUE ({n})",
                                               "body": "VALUE must be 2.", "user": "acme"})
                 )["number"] for n in range(count)]

    async def label(self, numbers: list[int]) -> None:
        await asyncio.gather(*(self.control("label", {"repo": REPO, "number": n,
                                                      "label": "agent", "actor": "acme"})
                               for n in numbers))

    async def model_steps(self) -> list[int]:
        """The step each request to the scripted model asked for, in order."""
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.get(f"http://127.0.0.1:{self.port + 1}/_scripted/requests")
            return list(answer.json()["steps"])

    async def jobs(self) -> list[Any]:
        store = await self.store()
        try:
            return await store.list_jobs(500)
        finally:
            await store.close()

    async def wait(self, predicate: Callable[[], Awaitable[bool]], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if await predicate():
                    return True
            await asyncio.sleep(0.2)
        return False

    async def ended(self, count: int, timeout: float = 180) -> list[Any]:
        async def done() -> bool:
            jobs = await self.jobs()
            return len(jobs) >= count and all(j.state in FINAL and (j.reported or
                                                                    j.unreportable)
                                              for j in jobs)

        await self.wait(done, timeout)
        return await self.jobs()


@contextlib.asynccontextmanager
async def cluster(tmp: Path, port: int, turns: list[dict[str, Any]], db_url: str = "",
                  settings: dict[str, str] | None = None, serve: bool = True
                  ) -> AsyncIterator[Cluster]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("HANDOFF_")}
    c = Cluster(tmp, port, db_url or f"sqlite+aiosqlite:///{tmp / 'data/handoff.db'}", env)
    c.sim, model = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    c.handoff = f"http://127.0.0.1:{port + 2}"
    (tmp / "script.json").write_text(json.dumps(turns))
    try:
        c.procs["sim"] = spawn(["simulator", "--port", str(port), "--root", str(tmp / "sim"),
                                "--webhook-url", f"{c.handoff}/webhook", "--webhook-secret",
                                SECRET], env, tmp / "sim.log", 10)
        await wait_http(f"{c.sim}/_sim/state", c.procs["sim"], tmp / "sim.log")
        c.procs["model"] = spawn(["model-server", "--port", str(port + 1), "--script",
                                  str(tmp / "script.json"), "--per-conversation"], env,
                                 tmp / "model.log", 10)
        await wait_http(f"{model}/v1/models", c.procs["model"], tmp / "model.log")
        app_id = (tmp / "sim.log").read_text().split("HANDOFF_APP_ID=")[1].split()[0]
        c.env = {**env, "HANDOFF_APP_ID": app_id,
                 "HANDOFF_PRIVATE_KEY": str(tmp / "sim/app-private-key.pem"),
                 "HANDOFF_WEBHOOK_SECRET": SECRET, "HANDOFF_GITHUB_URL": c.sim,
                 "HANDOFF_DATA_DIR": str(tmp / "data"), "HANDOFF_DATABASE_URL": c.db_url,
                 "HANDOFF_MODEL_BASE_URL": f"{model}/v1", "HANDOFF_MODEL_NAME": "scripted-1",
                 "HANDOFF_MODEL_API_KEY": "sk-faults", "HANDOFF_SANDBOX": "podman",
                 "HANDOFF_SANDBOX_CPUS": "0.5", "HANDOFF_SANDBOX_MEMORY_MB": "256",
                 "HANDOFF_STATUS_INTERVAL": "0", "HANDOFF_GITHUB_WRITE_INTERVAL": "0",
                 "HANDOFF_POLL_SECONDS": "0.3", "HANDOFF_HEARTBEAT_SECONDS": "1",
                 "HANDOFF_LEASE_SECONDS": "6", "HANDOFF_REPORT_RETRY_SECONDS": "1",
                 "HANDOFF_STOP_SECONDS": "15", "HANDOFF_SHUTDOWN_GRACE": "5",
                 "HANDOFF_CONCURRENCY": "2",
                 "HANDOFF_LOG_LEVEL": "INFO", **(settings or {})}
        if serve:
            c.procs["serve"] = spawn(["serve", "--no-worker", "--port", str(port + 2)], c.env,
                                     tmp / "serve.log")
            await wait_http(f"{c.handoff}/healthz", c.procs["serve"], tmp / "serve.log")
        yield c
    finally:
        for proc in c.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in c.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def prs(state: dict[str, Any]) -> list[str]:
    issues = state["repos"].get(REPO, {}).get("issues", {})
    return [i["pull"] for i in issues.values() if i["pull"]]


def comments(state: dict[str, Any], number: int) -> list[str]:
    return list(state["repos"][REPO]["issues"][str(number)]["comments"])


def posts(state: dict[str, Any], suffix: str) -> int:
    return sum(1 for method, path, _ in state["calls"] if method == "POST" and
               path.endswith(suffix))


async def job_in_command(c: Any) -> tuple[str, int]:
    """Start a worker, hand one issue over, and wait until its agent runs a command."""
    worker = c.start_worker()
    [number] = await c.issues(1)
    await c.label([number])

    async def in_command() -> bool:
        return any(j.stage == "agent" for j in await c.jobs())

    await c.wait(in_command, 120)
    return worker, number


# -- cases ------------------------------------------------------------------------------------

async def kill_mid_command(tmp: Path, port: int) -> Result:
    r = Result("SIGKILL worker mid-command", "taken over, resumed (status says so) from the "
               "saved step (the model is not asked for it again), 1 PR, attempts 2")
    async with cluster(tmp, port, RESUMABLE) as c:
        first, number = await job_in_command(c)

        async def in_step_one() -> bool:
            return len(await c.model_steps()) >= 2

        await c.wait(in_step_one, 60)
        await asyncio.sleep(2)
        c.signal(first, signal.SIGKILL)
        killed = time.monotonic()
        c.start_worker()
        [job] = await c.ended(1)
        state = await c.state()
        status = next(b for b in comments(state, number) if "handoff:status" in b)
        edits = state["repos"][REPO]["issues"][str(number)]["edits"]
        resumed = any("Resumed" in e for e in edits + [status])
        steps = await c.model_steps()
        r.observed = (f"{job.state}, attempts {job.attempts}, PRs {len(prs(state))}, resumed "
                      f"shown {resumed}, ended {time.monotonic() - killed:.0f} s after the kill"
                      f", steps asked of the model {steps}")
        r.ok = job.state == "succeeded" and job.attempts == 2 and len(prs(state)) == 1 and \
            resumed and steps == [0, 1, 1, 2, 3]
    return r


async def kill_between_push_and_pr(tmp: Path, port: int) -> Result:
    r = Result("SIGKILL worker between push and PR", "resumed from the pushed commit: 1 PR, "
               "agent not run again, attempts 2")
    async with cluster(tmp, port, script()) as c:
        first = c.start_worker()
        [number] = await c.issues(1)
        await c.control("faults", {"kind": "slow", "count": 1, "delay": 30,
                                   "match": f"POST /repos/{REPO}/pulls"})
        await c.label([number])

        async def opening() -> bool:
            return posts(await c.state(), "/pulls") > 0

        await c.wait(opening, 120)
        c.signal(first, signal.SIGKILL)
        c.start_worker()
        [job] = await c.ended(1)
        state = await c.state()
        edits = state["repos"][REPO]["issues"][str(number)]["edits"]
        rerun = not any("Resumed: the change was pushed" in e for e in edits)
        r.observed = (f"{job.state}, attempts {job.attempts}, PRs {len(prs(state))}, "
                      f"branch {(job.result.delivery.pushed_branch or '-')}, "
                      f"{'agent ran again' if rerun else 'no agent rerun'}")
        r.ok = job.state == "succeeded" and job.attempts == 2 and len(prs(state)) == 1 and \
            "no agent rerun" in r.observed
    return r


async def sigterm(c: Cluster, worker: int) -> float:
    """SIGTERM a worker and wait (at most a minute) for it to exit; the seconds it took."""
    started = time.monotonic()
    c.signal(worker, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(c.procs[worker].wait, 60)
    return time.monotonic() - started


async def sigterm_inside_grace(tmp: Path, port: int, sandbox: str = "podman") -> Result:
    r = Result("SIGTERM, the job ends within the grace", "the job finishes: PR and report "
               "before the worker exits, attempts 1")
    async with cluster(tmp, port, script(sleep=6), settings={
            "HANDOFF_SHUTDOWN_GRACE": "30", "HANDOFF_SANDBOX": sandbox}) as c:
        first, number = await job_in_command(c)
        await asyncio.sleep(2)
        took = await sigterm(c, first)
        [job] = await c.jobs()  # as the worker left it, no other worker since
        state = await c.state()
        r.observed = (f"exit {took:.1f} s after SIGTERM; then {job.state} (attempts "
                      f"{job.attempts}, reported {job.reported}), PRs {len(prs(state))}")
        r.ok = job.state == "succeeded" and job.reported and job.attempts == 1 and \
            len(prs(state)) == 1 and took < 30
    return r


async def sigterm_past_grace(tmp: Path, port: int, sandbox: str = "podman") -> Result:
    r = Result("SIGTERM, the job runs past the grace (2 s)", "handed back at the grace's end "
               "(queued at its stage, attempts 0, status says it resumes); the next worker "
               "goes on from the saved step: the model is not asked for it again, 1 PR")
    async with cluster(tmp, port, RESUMABLE, settings={
            "HANDOFF_SHUTDOWN_GRACE": "2", "HANDOFF_SANDBOX": sandbox}) as c:
        first, number = await job_in_command(c)

        async def in_step_two() -> bool:
            return len(await c.model_steps()) >= 2

        await c.wait(in_step_two, 60)
        await asyncio.sleep(2)
        took = await sigterm(c, first)
        [job] = await c.jobs()
        state = await c.state()
        status = next(b for b in comments(state, number) if "handoff:status" in b)
        checkpoint = job.result.agent.checkpoint
        saved = checkpoint.step if checkpoint else None
        handed = job.state == "queued" and job.attempts == 0 and job.stage == "agent"
        says = "will resume" in status
        c.start_worker()
        [done] = await c.ended(1)
        steps = await c.model_steps()
        state = await c.state()
        r.observed = (f"exit {took:.1f} s, {job.state} at {job.stage!r} attempts {job.attempts}"
                      f", saved step {saved}, status says resume {says}; then {done.state} "
                      f"(attempts {done.attempts}), PRs {len(prs(state))}, steps asked of the "
                      f"model {steps}")
        r.ok = 2 <= took < 2 + 15 and handed and says and saved == 1 and \
            done.state == "succeeded" and len(prs(state)) == 1 and steps == [0, 1, 1, 2, 3]
    return r


async def kill_serve(tmp: Path, port: int) -> Result:
    n = 400
    r = Result("SIGKILL serve after acknowledged deliveries", "0 acknowledged lost, 0 jobs "
               "doubled after redelivery")
    async with cluster(tmp, port, script()) as c:
        data = json.loads((ROOT / "tests/fixtures/github-webhooks/issues/labeled.json")
                          .read_text())
        data["label"]["name"] = "agent"
        data["installation"] = {"id": 1}
        bodies = []
        for i in range(n):
            data["issue"]["number"] = 1000 + i
            bodies.append((f"kill-{i}", json.dumps(data).encode()))
        acked: set[str] = set()

        async def send(client: httpx.AsyncClient, guid: str, body: bytes) -> int:
            sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            try:
                resp = await client.post(f"{c.handoff}/webhook", content=body, headers={
                    "content-type": "application/json", "x-github-event": "issues",
                    "x-github-delivery": guid, "x-hub-signature-256": sig})
            except httpx.HTTPError:
                return 0
            if resp.status_code < 300:
                acked.add(guid)
            return resp.status_code

        async with httpx.AsyncClient(timeout=10) as client:
            tasks = []
            for guid, body in bodies:  # a stream; the kill comes after the 100th answer
                tasks.append(asyncio.create_task(send(client, guid, body)))
                await asyncio.sleep(0.003)
                if len(acked) >= 100:
                    break
            c.signal("serve", signal.SIGKILL)
            await asyncio.gather(*tasks)
            before = len(acked)
            c.procs["serve"].wait()
            c.procs["serve"] = spawn(["serve", "--no-worker", "--port", str(port + 2)], c.env,
                                     tmp / "serve2.log")
            await wait_http(f"{c.handoff}/healthz", c.procs["serve"], tmp / "serve2.log")
            store = await c.store()
            lost = [g for g in acked if await store.delivery(g) is None]
            codes = await asyncio.gather(*(send(client, g, b) for g, b in bodies))  # redeliver
            jobs = await store.list_jobs(2 * n)
            await store.close()
        per_issue: dict[int, int] = {}
        for j in jobs:
            per_issue[j.issue_number] = per_issue.get(j.issue_number, 0) + 1
        doubled = sum(1 for v in per_issue.values() if v > 1)
        r.observed = (f"{before}/{n} acknowledged before the kill, {len(lost)} of them lost; "
                      f"after redelivery {len(jobs)} jobs for {len(per_issue)} issues, "
                      f"{doubled} doubled, 5xx {sum(1 for x in codes if x >= 500)}")
        r.ok = before > 0 and not lost and doubled == 0 and len(per_issue) == n
    return r


async def three_workers(tmp: Path, port: int, pg: str) -> Result:
    r = Result(f"3 workers on {'PostgreSQL' if pg else 'SQLite'}", "6 jobs: each run once, "
               "6 PRs, one status comment each, no duplicate comment")
    db = await create_database(pg, f"three{port}") if pg else ""
    async with cluster(tmp, port, script(), db_url=db,
                       settings={"HANDOFF_CONCURRENCY": "2"}) as c:
        for _ in range(3):
            c.start_worker()
        numbers = await c.issues(6)
        await c.label(numbers)
        jobs = await c.ended(6, 300)
        state = await c.state()
        dup = 0
        for number in numbers:
            bodies = comments(state, number)
            dup += len(bodies) - len(set(bodies)) + max(0, sum(
                1 for b in bodies if "handoff:status" in b) - 1)
        (tmp / "comments.json").write_text(json.dumps(
            {n: comments(state, n) for n in numbers}, indent=1))
        twice = sum(1 for j in jobs if j.attempts != 1)
        ok = sum(1 for j in jobs if j.state == "succeeded")
        r.observed = (f"{ok}/{len(jobs)} succeeded, {twice} run twice, {len(prs(state))} PRs, "
                      f"{dup} duplicate comments")
        r.ok = ok == 6 and twice == 0 and len(prs(state)) == 6 and dup == 0
    return r


async def github_bursts(tmp: Path, port: int) -> Result:
    r = Result("GitHub 502/503/429/403 bursts on reporting calls", "each failure comment "
               "posted exactly once, every job reported")
    async with cluster(tmp, port, NO_CHANGE) as c:
        numbers = await c.issues(4)
        c.start_worker()
        for kind, status in (("5xx", 502), ("5xx", 503), ("429", 429), ("secondary", 403)):
            await c.control("faults", {"kind": kind, "count": 6, "status": status,
                                       "retry_after": 1, "match": "/comments"})
        await c.label(numbers)
        jobs = await c.ended(4, 240)
        state = await c.state()
        failures = [sum(1 for b in comments(state, n) if "failed" in b and
                        "handoff:final" in b) for n in numbers]
        refused = sum(1 for _, path, code in state["calls"] if path.endswith("/comments")
                      and code and code >= 400)
        r.observed = (f"{refused} comment calls refused; failure comments per issue "
                      f"{failures}; reported {sum(1 for j in jobs if j.reported)}/{len(jobs)}")
        r.ok = failures == [1, 1, 1, 1] and all(j.reported for j in jobs) and refused > 0
    return r


async def sqlite_lock(tmp: Path, port: int) -> Result:
    r = Result("SQLite locked 9 s (lease 6 s) during heartbeats", "worker stops the job "
               "before its lease runs out; taken over; 1 PR; never two runs at once")
    async with cluster(tmp, port, script(sleep=5)) as c:
        _, number = await job_in_command(c)
        conn = sqlite3.connect(tmp / "data/handoff.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        await asyncio.sleep(9)
        conn.rollback()
        conn.close()
        [job] = await c.ended(1, 180)
        state = await c.state()
        log = (tmp / "worker0.log").read_text(errors="replace")
        stopped = "stopping it before its lease runs out" in log
        r.observed = (f"{job.state}, attempts {job.attempts}, PRs {len(prs(state))}, worker "
                      f"stopped itself {stopped}")
        r.ok = job.state == "succeeded" and len(prs(state)) == 1 and stopped
    return r


async def pg_restart(tmp: Path, port: int, pg: str, restart: Callable[[], None]) -> Result:
    r = Result("PostgreSQL restart during heartbeats", "job goes on (or is taken over), "
               "succeeds once, 1 PR")
    db = await create_database(pg, f"restart{port}")
    async with cluster(tmp, port, script(sleep=6), db_url=db) as c:
        _, number = await job_in_command(c)
        started = time.monotonic()
        await asyncio.to_thread(restart)
        down = time.monotonic() - started
        [job] = await c.ended(1, 180)
        state = await c.state()
        r.observed = (f"restart took {down:.1f} s; {job.state}, attempts {job.attempts}, "
                      f"PRs {len(prs(state))}")
        r.ok = job.state == "succeeded" and len(prs(state)) == 1
    return r


async def pr_refused_then_asked_again(tmp: Path, port: int, kind: str) -> Result:
    fault: dict[str, Any] = {"kind": "5xx", "count": 10_000, "status": 500} if kind == "500" \
        else {"kind": "422", "count": 1, "message": "No commits between main and the branch"}
    r = Result(f"POST /pulls {kind} after the push, then /agent",
               "the failure names the pushed branch; asking again: 1 PR closing the issue, "
               "the agent not run again")
    async with cluster(tmp, port, script(),
                       settings={"HANDOFF_GITHUB_AWAY_SECONDS": "0.5"}) as c:
        c.start_worker()
        [number] = await c.issues(1)
        await c.control("faults", {**fault, "match": f"POST /repos/{REPO}/pulls"})
        await c.label([number])
        [first] = await c.ended(1, 300)
        await c.clear_faults()
        named = f"pushed to branch `{first.result.delivery.pushed_branch}`" in \
            comments(await c.state(), number)[-1]
        asked = await c.model_requests()
        await c.control("comment", {"repo": REPO, "number": number, "body": "/agent",
                                    "actor": "acme"})
        second = (await c.ended(2, 180))[0]
        state = await c.state()
        issues = state["repos"][REPO]["issues"].values()
        closing = [i for i in issues if i["pull"] and f"Closes #{number}" in i["body"]]
        again = await c.model_requests() - asked
        r.observed = (f"first {first.category} after {first.deferrals} deferrals, branch named "
                      f"{named}; then {second.state}, PRs {len(prs(state))} (closing the "
                      f"issue {len(closing)}), model asked {again} more times")
        r.ok = first.category == "github-error" and named and second.state == "succeeded" \
            and len(prs(state)) == 1 and len(closing) == 1 and again == 0
    return r


async def github_away(tmp: Path, port: int) -> Result:
    r = Result("GitHub refusing connections 60 s after the agent finished", "the job waits "
               "(deferred, its commit kept), then 1 PR once GitHub is back; model asked once")
    turns = script(sleep=2)
    async with cluster(tmp, port, turns,
                       settings={"HANDOFF_GITHUB_AWAY_SECONDS": "5"}) as c:
        c.start_worker()
        [number] = await c.issues(1)
        await c.label([number])

        async def finished() -> bool:
            return await c.model_requests() >= len(turns)

        await c.wait(finished, 180)
        await c.control("outage", {"seconds": 60})
        dark = time.monotonic()
        [job] = await c.ended(1, 400)
        took = time.monotonic() - dark
        state = await c.state()
        asked = await c.model_requests()
        r.observed = (f"{job.state} {took:.0f} s after the outage began, deferrals "
                      f"{job.deferrals}, PRs {len(prs(state))}, model asked {asked} times "
                      f"for {len(turns)} turns")
        r.ok = job.state == "succeeded" and job.deferrals >= 1 and len(prs(state)) == 1 \
            and asked == len(turns) and took >= 60
    return r


async def fuzz(tmp: Path, port: int, pg: str) -> Result:
    n = 2000
    r = Result(f"{n:,} fuzzed signed deliveries ({'PostgreSQL' if pg else 'SQLite'})",
               "0 × 5xx, each answered 2xx/4xx with a reason, all recorded")
    db = await create_database(pg, f"fuzz{port}") if pg else ""
    async with cluster(tmp, port, script(), db_url=db) as c:
        statuses: dict[int, int] = {}
        ids: set[str] = set()
        async with httpx.AsyncClient(timeout=30) as client:
            for headers, body in deliveries(n, SECRET.encode(), seed=port):
                resp = await client.post(f"{c.handoff}/webhook", content=body, headers=headers)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                ids.add(headers["x-github-delivery"].decode("latin-1"))
        store = await c.store()
        recorded = await store.count_deliveries()
        await store.close()
        five = sum(v for k, v in statuses.items() if k >= 500)
        r.observed = (f"{dict(sorted(statuses.items()))}; recorded {recorded}/{len(ids)}")
        r.ok = five == 0 and recorded == len(ids)
    return r


async def disk_full(tmp: Path, port: int) -> Result:
    r = Result("disk full (SQLite file size limit)", "5xx once the disk is full, never a 202 "
               "for a delivery not on disk")
    async with cluster(tmp, port, script(), serve=False) as c:
        limit = 1_200_000
        env = {**c.env, "HANDOFF_LOG_LEVEL": "CRITICAL"}
        import resource

        def small_disk() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        with (tmp / "serve.log").open("wb") as out:
            c.procs["serve"] = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "serve", "--no-worker", "--port",
                 str(port + 2)], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=small_disk)
        await wait_http(f"{c.handoff}/healthz", c.procs["serve"], tmp / "serve.log")
        data = json.loads((ROOT / "tests/fixtures/github-webhooks/issues/labeled.json")
                          .read_text())
        data["label"]["name"] = "bug"
        body = json.dumps(data).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        codes: dict[str, int] = {}
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(20000):
                guid = f"disk-{i}-" + "x" * 50
                resp = await client.post(f"{c.handoff}/webhook", content=body, headers={
                    "content-type": "application/json", "x-github-event": "issues",
                    "x-github-delivery": guid, "x-hub-signature-256": sig})
                codes[guid] = resp.status_code
                if sum(1 for v in codes.values() if v >= 500) >= 50:
                    break
        c.procs["serve"].kill()
        c.procs["serve"].wait()
        conn = sqlite3.connect(tmp / "data/handoff.db")
        stored = {row[0] for row in conn.execute("SELECT id FROM deliveries")}
        conn.close()
        acked = [g for g, code in codes.items() if code == 202]
        fake = [g for g in acked if g not in stored]
        five = sum(1 for v in codes.values() if v >= 500)
        r.observed = (f"{len(acked)} × 202 then {five} × 5xx; 202s not on disk: {len(fake)}")
        r.ok = five > 0 and not fake
    return r


def child_of(pid: int) -> int | None:
    """The worker process `handoff serve` (``pid``) runs, if it runs."""
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", "bot.cli worker"],
                           capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its file system is full; returns it."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (1 << 20))
    return filler


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "128m") -> Any:
    """``folder`` as a file system of its own of ``size`` (a tmpfs; needs root)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        raise NotRunHere(f"cannot mount a small file system: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)


class NotRunHere(Exception):
    """A case needs something this machine does not give (root, a mount)."""


async def serve_with_worker(c: Cluster, port: int, extra: dict[str, str] | None = None
                            ) -> int:
    """`handoff serve` with its worker child (not --no-worker); returns the child's pid."""
    c.procs["serve"] = spawn(["serve", "--port", str(port + 2)], {**c.env, **(extra or {})},
                             c.tmp / "serve.log")
    await wait_http(f"{c.handoff}/healthz", c.procs["serve"], c.tmp / "serve.log")
    pid = c.procs["serve"].pid

    async def child() -> bool:
        return child_of(pid) is not None

    await c.wait(child, 30)
    return child_of(pid) or 0


async def disk_full_worker(tmp: Path, port: int, sandbox: str = "podman") -> Result:
    r = Result("data disk full during a job (serve's worker child)", "the worker lives (no "
               "SIGBUS; a restart on the full disk lives too); the job ends visibly once "
               "space is back")
    with small_disk(tmp / "data"):
        async with cluster(tmp, port, script(sleep=4), serve=False,
                           settings={"HANDOFF_SANDBOX": sandbox}) as c:
            first = await serve_with_worker(c, port)
            [number] = await c.issues(1)
            await c.label([number])

            async def in_agent() -> bool:
                return any(j.stage == "agent" for j in await c.jobs())

            await c.wait(in_agent, 120)
            filler = await asyncio.to_thread(fill, tmp / "data")
            await asyncio.sleep(6)  # the job goes on writing: transcript, stages, metrics
            lived = child_of(c.procs["serve"].pid) == first
            with contextlib.suppress(ProcessLookupError):  # any crash: the next child starts
                os.kill(first, signal.SIGKILL)  # on a full disk
            await asyncio.sleep(10)
            second = child_of(c.procs["serve"].pid)
            await asyncio.sleep(4)
            restarted_lived = second is not None and child_of(c.procs["serve"].pid) == second
            filler.unlink()
            [job] = await c.ended(1, 180)
            state = await c.state()
            log = (tmp / "serve.log").read_text(errors="replace")
            exits = [line.split("exited with ")[1].split(";")[0] for line in log.splitlines()
                     if "exited with" in line]
            shown = len(prs(state)) == 1 or any("handoff:final" in b
                                                for b in comments(state, number))
            r.observed = (f"first worker lived through the full disk {lived}, the one started "
                          f"on it lived {restarted_lived}, worker exits {exits}; then "
                          f"{job.state} {job.category or ''} (attempts {job.attempts}), "
                          f"PRs {len(prs(state))}, shown on GitHub {shown}")
            r.ok = lived and restarted_lived and exits in (["-9"], []) and shown and job.reported \
                and job.state == "succeeded"
    return r


async def run_case(name: str, tmp: Path, port: int, pg: str,
                   restart_pg: Callable[[], None]) -> Result:
    cases: dict[str, Callable[[], Awaitable[Result]]] = {
        "kill-mid-command": lambda: kill_mid_command(tmp, port),
        "kill-push-pr": lambda: kill_between_push_and_pr(tmp, port),
        "sigterm-grace": lambda: sigterm_inside_grace(tmp, port),
        "sigterm": lambda: sigterm_past_grace(tmp, port),
        "kill-serve": lambda: kill_serve(tmp, port),
        "three-sqlite": lambda: three_workers(tmp, port, ""),
        "three-postgres": lambda: three_workers(tmp, port, pg),
        "bursts": lambda: github_bursts(tmp, port),
        "sqlite-lock": lambda: sqlite_lock(tmp, port),
        "pg-restart": lambda: pg_restart(tmp, port, pg, restart_pg),
        "fuzz-sqlite": lambda: fuzz(tmp, port, ""),
        "fuzz-postgres": lambda: fuzz(tmp, port, pg),
        "disk-full": lambda: disk_full(tmp, port),
        "pr-500-ask-again": lambda: pr_refused_then_asked_again(tmp, port, "500"),
        "pr-422-ask-again": lambda: pr_refused_then_asked_again(tmp, port, "422"),
        "github-away": lambda: github_away(tmp, port),
        "disk-full-worker": lambda: disk_full_worker(tmp, port),
    }
    return await cases[name]()


CASES = ["kill-mid-command", "kill-push-pr", "sigterm-grace", "sigterm", "kill-serve",
         "three-sqlite", "three-postgres", "bursts", "sqlite-lock", "pg-restart", "fuzz-sqlite",
         "fuzz-postgres", "disk-full", "disk-full-worker", "pr-500-ask-again",
         "pr-422-ask-again", "github-away"]


async def main(args: argparse.Namespace) -> int:
    chosen = args.only or CASES
    results: list[Result] = []
    podman = bool(shutil.which("podman")) and subprocess.run(
        ["podman", "image", "exists", "handoff-sandbox:dev"]).returncode == 0
    with contextlib.ExitStack() as stack:
        pg = ""
        pg_data: dict[str, Any] = {}
        if any("postgres" in c or c == "pg-restart" for c in chosen):
            try:
                pg = stack.enter_context(throwaway_postgres(args.port_base + 49, 200))
                pg_data["url"] = pg
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                pg_data["error"] = str(exc)

        def restart_pg() -> None:
            bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)[0]
            sock = Path(pg.split("host=")[1].split("&")[0])
            data = sock.parent / "data"
            run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            # With a log file: a server started by pg_ctl would otherwise hold this call's
            # output pipes open, and the call would never return.
            subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l",
                            str(data.parent / "log"), "-m", "fast", "restart", "-o",
                            f"-k {sock} -c listen_addresses='' -p {args.port_base + 49} "
                            "-c max_connections=200"],
                           check=True, capture_output=True)

        for index, name in enumerate(chosen):
            port = args.port_base + 4 * (index % 12)
            tmp = Path(tempfile.mkdtemp(prefix=f"handoff-faults-{name}-"))
            needs_podman = name not in ("kill-serve", "fuzz-sqlite", "fuzz-postgres",
                                        "disk-full")
            started = time.monotonic()
            if needs_podman and not podman:
                result = Result(name, "", "not run: needs Podman and handoff-sandbox:dev")
            elif ("postgres" in name or name == "pg-restart") and not pg:
                result = Result(name, "", f"not run: PostgreSQL: {pg_data.get('error')}")
            else:
                try:
                    result = await run_case(name, tmp, port, pg, restart_pg)
                except NotRunHere as exc:
                    result = Result(name, "", f"not run: {exc}")
                except Exception as exc:  # a case that breaks is a failed case, with why
                    result = Result(name, "", f"error: {type(exc).__name__}: {exc}", False)
            result.seconds = time.monotonic() - started
            results.append(result)
            verdict = {True: "ok", False: "FAIL", None: "not run"}[result.ok]
            print(f"{result.case:<48} | {result.expected:<60} | {result.observed} | "
                  f"{result.seconds:.0f} s | {verdict}", flush=True)
            if result.ok:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                print(f"    logs kept in {tmp}", flush=True)
    print()
    print("| case | expected | observed | verdict |\n|---|---|---|---|")
    for result in results:
        verdict = {True: "ok", False: "FAIL", None: "not run"}[result.ok]
        print(f"| {result.case} | {result.expected} | {result.observed} | {verdict} |")
    return 0 if all(r.ok for r in results) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=lambda t: t.split(","), default=None,
                        help=f"cases to run, of: {', '.join(CASES)}")
    parser.add_argument("--port-base", type=int, default=18850)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
