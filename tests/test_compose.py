"""deploy/compose.yml runs a job: its images built from Debian packages
(deploy/build-images.sh), PostgreSQL, `handoff serve --no-worker` and `handoff worker` in
containers, the sandbox a sibling container started through the host's Podman service. GitHub
(the simulator), the model (the scripted server) and a package index are real HTTP servers on
the host, which the containers reach as host.containers.internal; the repository's declared
dependency comes through the egress proxy, whose socket the worker shares with the sandbox.
Everything the stack made is removed at the end, failed or not."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT, TEST_COMMAND
from helpers import package_index, wheel

from bot.github.registration import write_env
from bot.server import running
from devkit.scripted import ScriptedModel
from devkit.simulator import Simulator
from devkit.simulator.git import git as simgit
from devkit.stack import MODEL_KEY, SECRET

ROOT = Path(__file__).parent.parent
SIM_PORT, MODEL_PORT, WEB_PORT, INDEX_PORT = 47100, 47101, 47102, 47103
METRICS_PORT, WORKER_METRICS_PORT = 47104, 47105
PROJECT = "handoff-compose-test"
REPO = "acme/calc"
HOST = "host.containers.internal"  # the host, as Podman names it inside containers
WORKER_UID = 1000  # the Handoff image's user

pytestmark = [
    pytest.mark.podman,
    pytest.mark.skipif(shutil.which("docker-compose") is None,
                       reason="needs docker-compose (apt-get install docker-compose)"),
]


async def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120,
              check: bool = True) -> str:
    """A command's output (stdout and stderr together); fails saying what it printed."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{argv} took over {timeout:g} s") from None
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}:\n{text[-4000:]}")
    return text


@contextlib.contextmanager
def podman_service(socket: Path) -> Iterator[None]:
    """The host's Podman API on ``socket``, usable by the group root (the worker's extra
    group in compose.yml), as Podman's own podman.socket unit makes it."""
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no Podman service"
            time.sleep(0.1)
        socket.chmod(0o660)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Compose:
    """docker-compose on deploy/compose.yml, talking to the Podman service."""

    env: dict[str, str]

    async def __call__(self, *args: str, timeout: float = 180, check: bool = True) -> str:
        return await run(["docker-compose", "--file", "deploy/compose.yml", *args], self.env,
                         timeout, check)

    async def logs(self) -> str:
        return await self("logs", "--no-color", "--tail", "60", check=False)

    async def down(self) -> None:
        """Remove the stack's containers, network and volume, and any sandbox its workers
        left (a worker hands its running jobs back on SIGTERM, so normally none)."""
        workers = (await self("ps", "-q", "worker", check=False)).split()
        await self("down", "--volumes", "--remove-orphans", "--timeout", "30", timeout=120,
                   check=False)
        for worker in workers:  # a container's hostname is its short id
            names = await run(["podman", "ps", "-aq", "--filter", "label=handoff.sandbox=1",
                               "--filter", f"label=handoff.host={worker[:12]}"], check=False)
            for name in names.split():
                await run(["podman", "rm", "-f", "-t", "0", name], check=False)

    async def leftovers(self) -> list[str]:
        """What is left of the project in Podman: containers, volumes, networks."""
        label = f"label=com.docker.compose.project={PROJECT}"
        found = [*(await run(["podman", "ps", "-aq", "--filter", label])).split(),
                 *(await run(["podman", "volume", "ls", "-q", "--filter", label])).split(),
                 *(await run(["podman", "network", "ls", "-q", "--filter", label])).split()]
        return found


# The repository needs a package its test imports; its setup installs it from the index (a
# plain-HTTP index off this host: pip ignores those unless trusted).
SETUP = f"pip install --trusted-host {HOST} -r requirements.txt"
REPO_FILES = {**BUGGY_REPO, "requirements.txt": "tinydep\n",
              ".github/handoff.yml": f"test_command: {TEST_COMMAND}\nsetup_command: {SETUP}\n",
              "test_dep.py": "import tinydep\n\n\ndef test_dep():\n"
                             "    assert tinydep.ANSWER == 42\n"}


@contextlib.asynccontextmanager
async def host_services(base: Path) -> AsyncIterator[tuple[Simulator, str]]:
    """The simulator, the scripted model and a package index on all of the host's addresses
    (the containers come from their network's gateway), known to the containers by the
    host's name; yields the simulator and the index's URL."""
    model = ScriptedModel(FIX_SCRIPT, api_key=MODEL_KEY)
    sim = Simulator(base / "github", webhook_secret=SECRET,
                    base_url=f"http://{HOST}:{SIM_PORT}")
    sim.webhook_url = f"http://127.0.0.1:{WEB_PORT}/webhook"
    built = wheel(base, "tinydep", "ANSWER = 42\n")
    with package_index(base / "index", [built], ("0.0.0.0", INDEX_PORT), HOST) as index:
        async with running(model.app, "0.0.0.0", MODEL_PORT), \
                running(sim.app, "0.0.0.0", SIM_PORT):
            yield sim, index


def settings_file(path: Path, sim: Simulator, index: str) -> None:
    """The .env the stack reads, written as `handoff setup` writes one."""
    write_env(path, {
        "HANDOFF_APP_ID": str(sim.world.app_id), "HANDOFF_PRIVATE_KEY": sim.private_key,
        "HANDOFF_WEBHOOK_SECRET": SECRET, "HANDOFF_GITHUB_URL": f"http://{HOST}:{SIM_PORT}",
        "HANDOFF_MODEL_PROVIDER": "openai", "HANDOFF_MODEL_NAME": "scripted-1",
        "HANDOFF_MODEL_BASE_URL": f"http://{HOST}:{MODEL_PORT}/v1",
        "HANDOFF_MODEL_API_KEY": MODEL_KEY, "HANDOFF_PRICES": '{"scripted-1": [3, 15]}',
        "HANDOFF_SANDBOX_MEMORY_MB": "512",
        "HANDOFF_COMMAND_TIMEOUT": "60", "HANDOFF_STATUS_INTERVAL": "0",
        "HANDOFF_GITHUB_WRITE_INTERVAL": "0", "HANDOFF_POLL_SECONDS": "0.5",
        # The index is on the host, a private address to the proxy: allowed for the test.
        "HANDOFF_PIP_INDEX_URL": index, "HANDOFF_EGRESS_ALLOW_PRIVATE": "true"})


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float,
                compose: Compose) -> None:
    """Wait until ``check()`` is true; on timeout, fail with the stack's logs."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s\n{await compose.logs()}")
        await asyncio.sleep(1)


async def ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=3) as client:
        try:
            return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False


async def waiting(compose: Compose) -> bool:
    """Whether both the web and the worker said they wait for the database."""
    for service in ("web", "worker"):
        logs = await compose("logs", "--no-color", service, check=False)
        if "waiting for the database at postgresql+asyncpg://handoff:***@db/" not in logs:
            return False
    return True


async def job_state(compose: Compose, number: int) -> str:
    """The issue's job as `handoff jobs` in the web container shows it: its state, and
    "reported" once its final report is on GitHub."""
    listing = await compose("exec", "-T", "web", "handoff", "jobs", check=False)
    line = next((li for li in listing.splitlines() if f" {REPO}#{number} " in li), "")
    if not line:
        return ""
    state = line.split()[3]
    final = state in ("succeeded", "failed", "cancelled") and "[report pending" not in line
    return f"{state} reported" if final else state


def status_comment(sim: Simulator, number: int) -> str:
    comments = sim.get_repo(REPO).issues[number].comments
    return next((c.body for c in comments if "handoff:status" in c.body), "")


async def test_compose_stack_turns_a_labelled_issue_into_a_pull_request() -> None:
    started = time.monotonic()
    build = await run([str(ROOT / "deploy/build-images.sh")], timeout=900)
    print(f"images ({time.monotonic() - started:.0f} s):\n{build}")
    base = Path(tempfile.mkdtemp(prefix="handoff-compose-"))  # pytest's tmp is root's only
    base.chmod(0o755)
    data = base / "data"  # the same path on the host and in the containers
    data.mkdir()
    os.chown(data, WORKER_UID, WORKER_UID)
    compose = Compose({
        "DOCKER_HOST": f"unix://{base / 'podman.sock'}", "COMPOSE_PROJECT_NAME": PROJECT,
        "HANDOFF_ENGINE_SOCKET": str(base / "podman.sock"), "HANDOFF_DATA": str(data),
        "HANDOFF_ENV_FILE": str(base / "handoff.env"),
        "HANDOFF_PUBLISH": f"127.0.0.1:{WEB_PORT}", "POSTGRES_PASSWORD": secrets.token_hex(12),
        "HANDOFF_METRICS_PUBLISH": f"127.0.0.1:{METRICS_PORT}",
        "HANDOFF_WORKER_METRICS_PUBLISH": f"127.0.0.1:{WORKER_METRICS_PORT}"})
    try:
        with podman_service(base / "podman.sock"):
            async with host_services(base) as (sim, index):
                settings_file(base / "handoff.env", sim, index)
                try:
                    await job_through_compose(compose, sim)
                finally:
                    await compose.down()
                assert await compose.leftovers() == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"whole test {time.monotonic() - started:.0f} s")


async def job_through_compose(compose: Compose, sim: Simulator) -> None:
    """Web and worker first, alone: they wait for the database; then the rest, a labelled
    issue, and the pull request the worker opens from its sibling sandbox."""
    await compose("down", "--volumes", "--remove-orphans")  # what a killed run left
    await compose("up", "--detach", "--no-deps", "web", "worker")
    await until("web and worker wait for the database", lambda: waiting(compose), 60, compose)
    await compose("up", "--detach")
    await until("web ready", lambda: ready(f"http://127.0.0.1:{WEB_PORT}/readyz"), 120,
                compose)
    for service in ("web", "worker"):
        assert (await compose("exec", "-T", service, "id", "-u")).strip() == str(WORKER_UID)
    doctor = await compose("exec", "-T", "worker", "handoff", "doctor")  # exits 0 when ready
    assert "[ok  ] sandbox            podman ran a command" in doctor, doctor
    assert "[ok  ] database           postgresql+asyncpg answers" in doctor, doctor
    t0 = time.monotonic()
    sim.add_repo(REPO, REPO_FILES)
    number = sim.open_issue(REPO, "add() subtracts", "add(2, 3) must be 5.", "acme").number
    sim.label_issue(REPO, number, "agent", "acme")

    async def ended() -> bool:
        return (await job_state(compose, number)).endswith(" reported")

    await until("the job ends and is reported", ended, 180, compose)
    print(f"label to reported PR {time.monotonic() - t0:.1f} s")
    assert await job_state(compose, number) == "succeeded reported", status_comment(sim, number)
    repo = sim.get_repo(REPO)
    pulls = [i for i in repo.issues.values() if i.pull]
    assert len(pulls) == 1, status_comment(sim, number)
    pr = pulls[0]
    assert pr.pull and pr.pull.head.startswith(f"agent/issue-{number}-")
    assert f"Closes #{number}" in pr.body
    assert "return a + b" in simgit("show", f"{pr.pull.head}:calc.py", cwd=repo.path)
    assert "Done" in status_comment(sim, number)
    assert f"Setup: `{SETUP}`" in pr.body and "It failed" not in pr.body, pr.body
    assert "2 passed" in pr.body, pr.body  # tinydep imported: installed through the proxy
    async with httpx.AsyncClient(timeout=10) as client:  # the paid job shows in /metrics
        scrape = (await client.get(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")).text
    cost = [line for line in scrape.splitlines()
            if line.startswith("handoff_model_cost_dollars_total ")]
    assert cost and float(cost[0].split()[1]) > 0, scrape
