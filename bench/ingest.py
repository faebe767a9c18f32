"""Benchmark: Handoff's durable webhook ingest against a bare HMAC-checking endpoint.

Drives POST /webhook with correctly signed `issues.labeled` deliveries at 32 connections with
wrk, for both servers, one uvicorn process each, in alternating rounds. The bodies vary as
GitHub's do: built from GitHub's example payload, each on one of 40 repositories (under 8
owners and 4 installations), its own issue number, and an issue body from none to 64 KB
(most short, a few long); each request has its own delivery id. A body sent a second time
(wrk went round the whole set) is a replay, which Handoff refuses without a job. Prints
requests/s, p50, p99 and server CPU per request for each round and their medians, the
ratio, and checks that every delivery Handoff acknowledged is recorded exactly once and that
each distinct body it recorded made exactly one job. Target: ratio >= 0.5, p99 under 25 ms.

Usage: python bench/ingest.py [--seconds 10] [--connections 32] [--rounds 3] [--bodies 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = ROOT / "tests/fixtures/github-webhooks/issues/labeled.json"
SECRET = "bench-secret"
BARE, HANDOFF = "bare HMAC endpoint", "handoff durable ingest"
PINNED = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
PIN_CLIENT = ["taskset", "-c", "0"] if PINNED else []
PIN_SERVER = ["taskset", "-c", "1"] if PINNED else []

THREADS = 2
LUA = r"""
-- The bodies, one file, and where each starts, its length and its signature.
local file = io.open("%(bodies)s", "rb")
all = file:read("*a")
file:close()
index = dofile("%(index)s")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "issues"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  prefix = "bench-" .. tostring(tid) .. "-" .. tostring(os.time()) .. "-"
  counter = 0
  -- thread t sends bodies t+1, t+1+THREADS, ...: the threads together go through each once
  bodies, signatures = {}, {}
  for i = tid + 1, #index, %(threads)d do
    local entry = index[i]
    bodies[#bodies + 1] = string.sub(all, entry[1] + 1, entry[1] + entry[2])
    signatures[#signatures + 1] = entry[3]
  end
  all, index = nil, nil
  collectgarbage()
end
function request()
  counter = counter + 1
  local i = (counter - 1) %% #bodies + 1
  wrk.headers["X-GitHub-Delivery"] = prefix .. counter
  wrk.headers["X-Hub-Signature-256"] = signatures[i]
  return wrk.format(nil, "/webhook", nil, bodies[i])
end
"""
OWNERS = 8
REPOS = 40
INSTALLATIONS = 4


def bodies(count: int, seed: int = 23) -> list[bytes]:
    """``count`` distinct ``issues.labeled`` bodies: repositories, issue numbers, issue
    bodies of varied length (most under 2 KB, one in twenty up to 64 KB), senders."""
    rng = random.Random(seed)
    base = json.loads(PAYLOAD.read_text())
    base["label"]["name"] = "agent"
    out = []
    for n in range(count):
        data = json.loads(json.dumps(base))
        repo = n % REPOS
        owner = f"owner{repo % OWNERS}"
        name = f"{owner}/project-{repo}"
        data["installation"] = {"id": 1 + repo % INSTALLATIONS}
        data["repository"].update(full_name=name, name=f"project-{repo}", id=1000 + repo)
        data["repository"]["owner"]["login"] = owner
        data["issue"]["number"] = 1 + n // REPOS
        size = rng.randint(16 * 1024, 64 * 1024) if rng.random() < 0.05 else \
            int(rng.expovariate(1 / 600))
        data["issue"]["body"] = "".join(rng.choices(WORDS, k=size // 6 + 1))[:size]
        data["sender"]["login"] = f"person{rng.randrange(50)}"
        out.append(json.dumps(data).encode())
    return out


WORDS = ["fix ", "the ", "add() ", "returns ", "wrong ", "value\n", "when ", "input ",
         "is ", "negative. ", "```py\n", "```\n"]


def write_bodies(tmp: Path, count: int) -> tuple[Path, list[int]]:
    """The bodies and their index for the Lua script; the script's path and the sizes."""
    made = bodies(count)
    (tmp / "bodies.bin").write_bytes(b"".join(made))
    entries, offset = [], 0
    for body in made:
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        entries.append(f'{{{offset},{len(body)},"{signature}"}}')
        offset += len(body)
    (tmp / "index.lua").write_text("return {" + ",\n".join(entries) + "}\n")
    lua = tmp / "ingest.lua"
    lua.write_text(LUA % {"bodies": tmp / "bodies.bin", "index": tmp / "index.lua",
                          "threads": THREADS})
    return lua, [len(b) for b in made]


def free_port(fixed: int = 0) -> int:
    """``fixed`` if given (--port), else a port the kernel picks."""
    if fixed:
        return fixed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def run_wrk(port: int, lua: Path, seconds: int, connections: int) -> dict[str, float]:
    # wrk on core 0, the server on core 1: each side gets one core, as the targets assume.
    out = subprocess.run([*PIN_CLIENT, "wrk", f"-t{THREADS}", f"-c{connections}", f"-d{seconds}s",
                          "--latency", "-s", str(lua), f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50": ms("50"), "p99": ms("99"), "total": total,
            "errors": int(non2xx.group(1)) if non2xx else 0}


def measure(proc: subprocess.Popen[bytes], port: int, lua: Path,
            args: argparse.Namespace) -> dict[str, float]:
    """One wrk run against a started server, then stop it; adds the server's CPU per request."""
    try:
        before = cpu_seconds(proc.pid)
        result = run_wrk(port, lua, args.seconds, args.connections)
        result["cpu_us"] = (cpu_seconds(proc.pid) - before) / result["total"] * 1e6
        return result
    finally:
        proc.terminate()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*PIN_SERVER, *cmd], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    wait_up(port)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bodies", type=int, default=10000,
                        help="distinct bodies to go round (default 10000)")
    parser.add_argument("--port", type=int, default=0,
                        help="serve on this port and the next (default: any free ones)")
    args = parser.parse_args()
    if args.bodies < THREADS:
        parser.error(f"--bodies must be at least {THREADS} (one a wrk thread)")
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    lua, sizes = write_bodies(tmp, args.bodies)
    env = {**os.environ, "BENCH_SECRET": SECRET, "HANDOFF_WEBHOOK_SECRET": SECRET,
           "PYTHONPATH": str(ROOT)}
    ranked = sorted(sizes)
    print(f"{len(sizes):,} distinct bodies on {min(REPOS, len(sizes))} repositories: "
          f"{ranked[(len(ranked) - 1) // 2]:,} bytes median, p95 "
          f"{ranked[int(0.95 * (len(ranked) - 1))]:,}, largest {ranked[-1]:,}; {args.connections} "
          f"connections, {args.seconds}s each"
          + (", server and wrk pinned to one core each" if PINNED else ""))

    # Rounds alternate between the two servers, so a slow spell of a shared machine falls on
    # both; each figure printed at the end is the median over the rounds.
    runs: dict[str, list[dict[str, float]]] = {BARE: [], HANDOFF: []}
    ok = True
    for round_ in range(1, args.rounds + 1):
        port = free_port(args.port)
        bare = serve([sys.executable, "-m", "uvicorn", "bench.bare_endpoint:app", "--port",
                      str(port), "--log-level", "warning", "--no-access-log"], env, port)
        runs[BARE].append(measure(bare, port, lua, args))
        port = free_port(args.port and args.port + 1)
        handoff = serve([sys.executable, "-m", "bot.cli", "serve", "--no-worker", "--port",
                         str(port)], {**env, "HANDOFF_LOG_LEVEL": "WARNING",
                                      "HANDOFF_DATA_DIR": str(tmp / f"data{round_}")}, port)
        runs[HANDOFF].append(measure(handoff, port, lua, args))
        print(f"round {round_}: " + "   ".join(
            f"{name} {r[-1]['rps']:,.0f} req/s, p99 {r[-1]['p99']:.1f} ms, "
            f"{r[-1]['cpu_us']:.0f} us CPU/request" for name, r in runs.items()))
        ok = exactly_once(tmp / f"data{round_}" / "handoff.db", runs[HANDOFF][-1],
                          args.connections) and ok

    results = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
               for name, rs in runs.items()}
    print("medians:")
    for name, r in results.items():
        print(f"  {name:<24} {r['rps']:>9,.0f} req/s   p50 {r['p50']:6.2f} ms   "
              f"p99 {r['p99']:6.2f} ms   {r['cpu_us']:6.1f} us CPU/request")
    ratio = results[HANDOFF]["rps"] / results[BARE]["rps"]
    print(f"ratio handoff/bare: {ratio:.2f} (target >= 0.50); "
          f"handoff p99 {results[HANDOFF]['p99']:.2f} ms (target < 25 ms)")
    print("exactly once: " + ("yes" if ok else "NO"))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


def exactly_once(db: Path, run: dict[str, float], connections: int) -> bool:
    """Every acknowledged delivery recorded once, and one job per distinct body recorded
    (a body wrk sent again is a replay: recorded, no job)."""
    recorded = asyncio.run(count(db))
    accepted = int(run["total"] - run["errors"])
    print(f"  handoff recorded {recorded['deliveries']:,} deliveries (distinct "
          f"{recorded['distinct']:,}; acknowledged {accepted:,}): {recorded['bodies']:,} "
          f"distinct bodies made {recorded['jobs']:,} jobs on {recorded['repos']} "
          f"repositories, {recorded['deliveries'] - recorded['bodies']:,} were replays")
    # wrk counts requests it sent; a request cut off at the end may be recorded unanswered.
    return recorded["deliveries"] == recorded["distinct"] and \
        0 <= recorded["deliveries"] - accepted <= connections and \
        recorded["jobs"] == recorded["bodies"]


async def count(db: Path) -> dict[str, int]:
    from sqlalchemy import text

    sys.path.insert(0, str(ROOT))
    from bot.jobs.store import Store

    store = await Store.open(f"sqlite+aiosqlite:///{db}")
    async with store.engine.connect() as conn:
        total = (await conn.execute(text("SELECT count(*) FROM deliveries"))).scalar_one()
        distinct = (await conn.execute(text("SELECT count(DISTINCT id) FROM deliveries"))
                    ).scalar_one()
        jobs = (await conn.execute(text("SELECT count(*) FROM jobs"))).scalar_one()
        repos = (await conn.execute(text("SELECT count(DISTINCT repo) FROM jobs"))
                 ).scalar_one()
        digests = (await conn.execute(text("SELECT count(*) FROM payloads"))).scalar_one()
    await store.close()
    return {"deliveries": total, "distinct": distinct, "jobs": jobs, "repos": repos,
            "bodies": digests}


if __name__ == "__main__":
    sys.exit(main())
