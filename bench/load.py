"""Benchmark: Handoff under load, as a deployment runs it.

Separate processes on 127.0.0.1: `handoff serve` (receiver and worker in one process, Podman
sandboxes), the GitHub simulator and the scripted model server. While signed deliveries that
Handoff ignores (`issues.labeled` with another label) arrive at a fixed rate, N issues of one
repository are labeled `agent` at once with HANDOFF_CONCURRENCY=N; each job's agent burns CPU
in its sandbox for a few steps, edits a file and finishes, and the job opens a pull request.

For each database (SQLite, PostgreSQL), job count and delivery rate it prints the receiver's
p50/p99 while idle and while the jobs run, deliveries refused (5xx, from the load and among
the simulator's trigger deliveries), how the jobs ended and how long they took. Exits non-zero
if any delivery got a 5xx, any job did not end, or a p99 under load is over 50 ms.

HANDOFF_SQLITE_SYNC=normal measures SQLite without an fsync per commit (see the README).

Usage: python bench/load.py [--db sqlite,postgres] [--jobs 8,16] [--rates 50,200]
                            [--steps 3] [--burn 1] [--timeout 600] [--port-base 18510]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy/sandbox/containers.conf"))

from bot.jobs.store import Store  # noqa: E402
from devkit.stack import throwaway_postgres  # noqa: E402

SECRET = "load-bench-secret"
MODEL_KEY = "sk-load-bench"
REPO = "acme/team"
P99_TARGET_MS = 50.0
FINAL = ("succeeded", "failed", "cancelled")
REMOTE_NICE = 10
CLIENT_NICE = -5


@dataclass
class Scenario:
    """One run: a database, a number of jobs and a delivery rate."""

    db: str = "sqlite"
    jobs: int = 8
    rate: float = 50.0
    steps: int = 3  # agent steps that burn CPU, before the edit and the finish
    burn: float = 1.0  # seconds of CPU per such step
    sandbox_cpus: float = 0.5
    idle_seconds: float = 5.0
    timeout: float = 600.0
    port_base: int = 18510
    pg_url: str = ""
    in_process: bool = False  # `serve --in-process`: the worker on the receiver's loop


@dataclass
class Load:
    """Signed, ignored deliveries sent at a fixed rate; latencies and statuses per phase."""

    url: str
    rate: float
    phase: str = "idle"
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"idle": [], "load": []})
    slowest: list[tuple[float, float]] = field(default_factory=list)  # (latency ms, sent at)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0
    ids: Iterator[int] = field(default_factory=itertools.count)

    def body(self) -> bytes:
        data = json.loads((ROOT / "tests/fixtures/github-webhooks/issues/labeled.json")
                          .read_text())
        data["label"]["name"] = "bug"
        data["installation"] = {"id": 1}
        return json.dumps(data).encode()

    async def run(self, stop: asyncio.Event) -> None:
        """Open loop: a request every 1/rate seconds, whether or not earlier ones answered."""
        body = self.body()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        client = RawClient(self.url)
        sent: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for n in itertools.count():
            if stop.is_set():
                break
            await asyncio.sleep(max(0.0, start + n / self.rate - time.monotonic()))
            task = asyncio.create_task(self.send(client, body, signature))
            sent.add(task)
            task.add_done_callback(sent.discard)
        await asyncio.gather(*sent)
        client.close()

    async def send(self, client: RawClient, body: bytes, signature: str) -> None:
        phase = self.phase
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "issues",
                   "X-GitHub-Delivery": f"load-{os.getpid()}-{next(self.ids)}",
                   "X-Hub-Signature-256": signature}
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(client.post(body, headers), 30)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.failures += 1
            return
        took = (time.perf_counter() - started) * 1000
        self.latencies[phase].append(took)
        if took > P99_TARGET_MS:
            self.slowest.append((took, time.time() - took / 1000))
        self.statuses[status] = self.statuses.get(status, 0) + 1


class RawClient:
    """HTTP/1.1 POSTs over kept-alive connections, written by hand: far less CPU than httpx
    per request, so the load generator's own work hardly shows in what it measures."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, \
            parts.path or "/"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.all: list[asyncio.StreamWriter] = []

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\n{head}"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        while self.idle:  # a kept-alive connection the server closed meanwhile: the next one
            reader, writer = self.idle.pop()
            writer.write(request)
            status = await self.answer(reader)
            if status:
                self.idle.append((reader, writer))
                return status
        reader, writer = await self.connect()
        writer.write(request)
        status = await self.answer(reader)
        if not status:
            raise ConnectionError("the server closed a new connection without answering")
        self.idle.append((reader, writer))
        return status

    @staticmethod
    async def answer(reader: asyncio.StreamReader) -> int:
        """The response's status (its body read and dropped); 0 if the connection closed."""
        line = await reader.readline()
        if not line:
            return 0
        status = int(line.split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        return status

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.all.append(writer)
        return reader, writer

    def close(self) -> None:
        for writer in self.all:
            writer.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def job_script(steps: int, burn: float) -> list[dict[str, Any]]:
    """The agent's turns: burn CPU for ``steps`` steps, edit a file, finish."""
    spin = f"end=$(($(date +%s%N)+{int(burn * 1e9)})); while [ $(date +%s%N) -lt $end ]; do :; done"
    turns: list[dict[str, Any]] = [{"tool": "bash", "args": {"command": spin}}
                                   for _ in range(steps)]
    turns.append({"tool": "edit", "args": {"path": "app.py", "old_text": "VALUE = 1",
                                           "new_text": "VALUE = 2"}})
    turns.append({"tool": "finish", "args": {"summary": "VALUE is 2 now."}})
    return turns


def spawn(args: list[str], env: dict[str, str], log: Path, nice: int = 0
          ) -> subprocess.Popen[bytes]:
    """A `handoff` command (or a `handoff-dev` one: the simulator, the model server) as its own
    process at niceness ``nice`` (whatever the bench's own): 10 for the stand-ins of remote
    services (GitHub, the model), which a deployment does not run on Handoff's machine."""
    relative = nice - os.nice(0)
    prefix = ["nice", "-n", str(relative)] if relative else []
    with log.open("wb") as out:
        module = "devkit.cli" if args[0] in ("simulator", "model-server") else "bot.cli"
        return subprocess.Popen([*prefix, sys.executable, "-m", module, *args], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


async def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                await client.get(url)
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.asynccontextmanager
async def processes(s: Scenario, tmp: Path, env: dict[str, str]
                    ) -> AsyncIterator[dict[str, str]]:
    """The simulator, the model server and `handoff serve`, each its own process."""
    sim_port, model_port, handoff_port = s.port_base, s.port_base + 1, s.port_base + 2
    urls = {"sim": f"http://127.0.0.1:{sim_port}", "model": f"http://127.0.0.1:{model_port}",
            "handoff": f"http://127.0.0.1:{handoff_port}", "log": str(tmp / "handoff.log"),
            "metrics": f"http://127.0.0.1:{s.port_base + 3}"}
    (tmp / "script.json").write_text(json.dumps(job_script(s.steps, s.burn)))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(spawn(["simulator", "--port", str(sim_port), "--root", str(tmp / "sim"),
                            "--webhook-url", f"{urls['handoff']}/webhook",
                            "--webhook-secret", SECRET], env, tmp / "sim.log", REMOTE_NICE))
        await wait_http(f"{urls['sim']}/_sim/state", procs[-1], tmp / "sim.log")
        procs.append(spawn(["model-server", "--port", str(model_port), "--script",
                            str(tmp / "script.json"), "--per-conversation"], env,
                           tmp / "model.log", REMOTE_NICE))
        await wait_http(f"{urls['model']}/v1/models", procs[-1], tmp / "model.log")
        app_id = (tmp / "sim.log").read_text().split("HANDOFF_APP_ID=")[1].split()[0]
        handoff = {**env, **handoff_env(s, tmp, app_id, urls)}
        serve = ["serve", "--port", str(handoff_port)] + (["--in-process"] if s.in_process
                                                          else [])
        procs.append(spawn(serve, handoff, tmp / "handoff.log"))
        await wait_http(f"{urls['handoff']}/healthz", procs[-1], tmp / "handoff.log")
        yield urls
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def handoff_env(s: Scenario, tmp: Path, app_id: str, urls: dict[str, str]) -> dict[str, str]:
    env = {"HANDOFF_APP_ID": app_id, "HANDOFF_PRIVATE_KEY": str(tmp / "sim/app-private-key.pem"),
           "HANDOFF_WEBHOOK_SECRET": SECRET, "HANDOFF_GITHUB_URL": urls["sim"],
           "HANDOFF_DATA_DIR": str(tmp / "data"), "HANDOFF_CONCURRENCY": str(s.jobs),
           "HANDOFF_MODEL_BASE_URL": f"{urls['model']}/v1", "HANDOFF_MODEL_NAME": "scripted-1",
           "HANDOFF_MODEL_API_KEY": MODEL_KEY, "HANDOFF_SANDBOX": "podman",
           "HANDOFF_SANDBOX_CPUS": str(s.sandbox_cpus), "HANDOFF_SANDBOX_MEMORY_MB": "256",
           "HANDOFF_STATUS_INTERVAL": "1", "HANDOFF_GITHUB_WRITE_INTERVAL": "0",
           "HANDOFF_POLL_SECONDS": "0.5", "HANDOFF_HEARTBEAT_SECONDS": "5",
           "HANDOFF_LEASE_SECONDS": "30", "HANDOFF_LOG_LEVEL": "INFO",
           "HANDOFF_METRICS_PORT": urls["metrics"].rsplit(":", 1)[1]}
    if s.pg_url:
        env["HANDOFF_DATABASE_URL"] = s.pg_url
    return env


async def control(client: httpx.AsyncClient, base: str, path: str, body: dict[str, Any]
                  ) -> dict[str, Any]:
    response = await client.post(f"{base}/_sim/{path}", json=body)
    response.raise_for_status()
    return dict(response.json())


async def open_issues(sim: str, count: int) -> list[int]:
    files = {"app.py": "VALUE = 1\n", "README.md": "# team\n",
             ".github/handoff.yml": "test_command: python3 -c 'import app'\n"}
    async with httpx.AsyncClient(timeout=30) as client:
        await control(client, sim, "repos", {"full_name": REPO, "files": files})
        return [(await control(client, sim, "issues", {
            "repo": REPO, "title": f"Set VALUE to 2 ({n})", "body": "VALUE must be 2.",
            "user": "acme"}))["number"] for n in range(count)]


async def label_all(sim: str, numbers: list[int]) -> None:
    """Label every issue at once, as a person bulk-labeling does."""
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(control(client, sim, "label", {
            "repo": REPO, "number": n, "label": "agent", "actor": "acme"}) for n in numbers))


async def wait_jobs(store: Store, count: int, timeout: float) -> list[Any]:
    """Until ``count`` jobs exist and all ended (and were reported), or the timeout."""
    deadline = time.monotonic() + timeout
    jobs: list[Any] = []
    while time.monotonic() < deadline:
        jobs = await store.list_jobs(count + 10)
        if len(jobs) >= count and all(j.state in FINAL and j.reported for j in jobs):
            break
        await asyncio.sleep(1)
    return jobs


async def trigger_statuses(sim: str) -> dict[str, str]:
    """How Handoff answered each `agent` label delivery, as the simulator saw it ("OK", a
    status code, or why it could not connect)."""
    async with httpx.AsyncClient(timeout=30) as client:
        state = (await client.get(f"{sim}/_sim/state")).json()
    return {d["guid"]: d["status"] for d in state["deliveries"]
            if d["event"] == "issues" and d["action"] == "labeled"}


async def run_scenario(s: Scenario, tmp: Path) -> dict[str, Any]:
    """Run one scenario; returns its figures."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with processes(s, tmp, env) as urls:
        numbers = await open_issues(urls["sim"], s.jobs)
        load = Load(f"{urls['handoff']}/webhook", s.rate)
        stop = asyncio.Event()
        sender = asyncio.create_task(load.run(stop))
        await asyncio.sleep(s.idle_seconds)
        load.phase = "load"
        started = time.time()
        await label_all(urls["sim"], numbers)
        store = await Store.open(s.pg_url or f"sqlite+aiosqlite:///{tmp / 'data/handoff.db'}")
        try:
            jobs = await wait_jobs(store, s.jobs, s.timeout)
        finally:
            await store.close()
        wall = time.time() - started
        stop.set()
        await sender
        triggers = await trigger_statuses(urls["sim"])
        served = await server_view(urls["metrics"])
    log = Path(urls["log"]).read_text(errors="replace")
    f = figures(s, load, jobs, triggers, wall, log)
    f["server_over_target"] = served
    f["slowest"] = [f"{ms:,.0f} ms sent {at - started:+.1f} s after the labels"
                    for ms, at in sorted(load.slowest, reverse=True)[:5]]
    return f


async def server_view(base: str) -> str:
    """The receiver's own count of answers slower than the target (its webhook histogram:
    arrival to answer, inside the process), against what the load generator measured."""
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"{base}/metrics")).text
    buckets = {}
    for line in text.splitlines():
        if line.startswith("handoff_webhook_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    total, within = buckets.get("+Inf", 0.0), buckets.get(str(P99_TARGET_MS / 1000), 0.0)
    return f"{total - within:.0f} of {total:.0f} over {P99_TARGET_MS:g} ms"


def figures(s: Scenario, load: Load, jobs: list[Any], triggers: dict[str, str], wall: float,
            log: str) -> dict[str, Any]:
    ended = [j for j in jobs if j.state in FINAL]
    durations = [j.finished_at - j.created_at for j in ended if j.finished_at]
    return {
        "scenario": f"{s.db}{sync_mode(s)} {s.jobs} jobs {s.rate:g}/s",
        "idle_p50": percentile(load.latencies["idle"], 50),
        "idle_p99": percentile(load.latencies["idle"], 99),
        "load_p50": percentile(load.latencies["load"], 50),
        "load_p99": percentile(load.latencies["load"], 99),
        "sent": sum(load.statuses.values()) + load.failures,
        "refused": sum(n for code, n in load.statuses.items() if code >= 500) + load.failures,
        "trigger_refused": sum(1 for status in triggers.values() if status != "OK"),
        "triggers": len(triggers),
        "jobs": len(jobs), "ended": len(ended),
        "succeeded": sum(1 for j in ended if j.state == "succeeded"),
        "job_median": statistics.median(durations) if durations else float("nan"),
        "job_max": max(durations, default=float("nan")), "wall": wall,
        "locked": log.count("database is locked"),
        "bad_jobs": [f"{j.id} {j.state} {j.stage} {j.reason[:120]}" for j in jobs
                     if j.state != "succeeded"],
    }


def sync_mode(s: Scenario) -> str:
    """How SQLite commits, when not the default (HANDOFF_SQLITE_SYNC=normal)."""
    mode = os.environ.get("HANDOFF_SQLITE_SYNC", "full")
    return f" ({mode})" if s.db == "sqlite" and mode != "full" else ""


def passed(f: dict[str, Any], expected_jobs: int) -> bool:
    return (f["refused"] == 0 and f["trigger_refused"] == 0 and f["ended"] == expected_jobs
            and f["jobs"] == expected_jobs and f["load_p99"] <= P99_TARGET_MS)


def report(f: dict[str, Any], expected_jobs: int) -> None:
    print(f"{f['scenario']:<26} idle p50 {f['idle_p50']:6.1f} p99 {f['idle_p99']:6.1f} ms | "
          f"load p50 {f['load_p50']:6.1f} p99 {f['load_p99']:6.1f} ms | "
          f"refused {f['refused']}/{f['sent']}, triggers {f['trigger_refused']}/{f['triggers']}"
          f" | jobs ended {f['ended']}/{expected_jobs} ({f['succeeded']} succeeded), "
          f"median {f['job_median']:.1f} s, max {f['job_max']:.1f} s | "
          f"'database is locked' in log: {f['locked']} | "
          + ("ok" if passed(f, expected_jobs) else "FAIL"), flush=True)
    print(f"    receiver's own view: {f['server_over_target']}; slowest as measured: "
          + "; ".join(f["slowest"]))
    for line in f["bad_jobs"]:
        print(f"    job {line}")


async def create_database(url_template: str, name: str) -> str:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url_template.format(db="postgres"),
                                 isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(f"CREATE DATABASE {name}"))
    await engine.dispose()
    return url_template.format(db=name)


async def main(args: argparse.Namespace) -> int:
    ok = True
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(throwaway_postgres(args.port_base + 40, 200)) \
            if "postgres" in args.db else ""
        # The load generator stands in for GitHub, which sends from other machines: it runs
        # ahead of the machine under test (when root), so its own waits for a core are not
        # counted as the receiver's latency; everything it starts runs at its usual priority.
        with contextlib.suppress(PermissionError):
            os.nice(CLIENT_NICE)
        for n, (db, jobs, rate) in enumerate(itertools.product(args.db, args.jobs, args.rates)):
            tmp = Path(tempfile.mkdtemp(prefix="handoff-load-"))
            s = Scenario(db=db, jobs=jobs, rate=rate, steps=args.steps, burn=args.burn,
                         sandbox_cpus=args.sandbox_cpus, idle_seconds=args.idle_seconds,
                         timeout=args.timeout, port_base=args.port_base, in_process=args.in_process)
            if db == "postgres":
                s.pg_url = await create_database(pg, f"load{n}")
            f = await run_scenario(s, tmp)
            report(f, jobs)
            ok = ok and passed(f, jobs)
            if passed(f, jobs):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                print(f"    logs kept in {tmp}")
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def numbers(kind: type) -> Any:
        return lambda text: [kind(x) for x in text.split(",")]

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=lambda t: t.split(","), default=["sqlite", "postgres"])
    parser.add_argument("--jobs", type=numbers(int), default=[8, 16])
    parser.add_argument("--rates", type=numbers(float), default=[50.0, 200.0])
    parser.add_argument("--steps", type=int, default=3, help="CPU-burning agent steps per job")
    parser.add_argument("--burn", type=float, default=1.0, help="seconds of CPU per step")
    parser.add_argument("--sandbox-cpus", type=float, default=0.5)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="per run, for the jobs")
    parser.add_argument("--port-base", type=int, default=18510)
    parser.add_argument("--in-process", action="store_true",
                        help="`serve --in-process`: the worker on the receiver's event loop")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
