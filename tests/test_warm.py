"""The warm environment: a second job on a repository starts from what the first one's setup
prepared (the setup does not run again), a changed lock file starts cold, a repository never
gets another's environment, and the cache stays within its size with the least recently used
evicted first."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT, TEST_COMMAND
from helpers import package_index, wheel
from pydantic import SecretStr

from bot import metrics
from bot.cli import main
from bot.executor.gitops import Checkout
from bot.executor.sandbox import Backend
from bot.executor.sandbox.bubblewrap import BubblewrapBackend
from bot.executor.sandbox.container import ContainerBackend
from bot.executor.sandbox.local import LocalBackend
from bot.executor.warm import MOUNT, OUT, Key, WarmCache, capture, decide, restore_command
from bot.jobs.store import Job
from devkit.simulator.git import commit_files
from devkit.stack import Stack, stack

REPO = "acme/calc"
TOKEN = "dash-token-warm-0123456789"
IMAGE = os.environ.get("HANDOFF_SANDBOX_IMAGE", "handoff-sandbox:dev")


def archives(tree: Path, size: int = 1000) -> Path:
    """A work tree holding the two archives a sandbox writes after a setup."""
    out = tree / OUT
    out.mkdir(parents=True, exist_ok=True)
    for name in ("home.tar", "tree.tar"):
        (out / name).write_bytes(b"x" * size)
    return tree


def key(repo: str = REPO, installation: int = 1, lock: str = "a1") -> Key:
    return Key(installation, repo, {"image": "img", "steps": ["pip install -r r.txt"],
                                    "env": {}, "files": {"requirements.txt": lock}})


async def test_a_kept_environment_is_found_by_its_own_key_only(tmp_path: Path) -> None:
    cache = WarmCache(tmp_path / "warm", 100, 12)
    await cache.keep(key(), archives(tmp_path / "ws"))
    assert cache.find(key()) is not None
    assert decide(cache, key(), offline=False, on_base=True).state == "warm"
    # Another repository, the same repository under another installation: never.
    assert cache.find(key("acme/other")) is None
    assert cache.find(key(installation=2)) is None
    other = decide(cache, key("acme/other"), offline=False, on_base=True)
    assert (other.state, other.reason, other.keep) == (
        "cold", "no environment kept for this repository yet", True)
    # A changed lock file: cold, and the reason names it.
    moved = decide(cache, key(lock="b2"), offline=False, on_base=False)
    assert moved.state == "cold" and not moved.keep
    assert moved.reason == "`requirements.txt` changed since the last environment was kept"
    # A branch that changes its build files never starts warm.
    assert decide(cache, key(), offline=True, on_base=False).state == "cold"
    # A newer environment of the repository replaces its older one.
    await cache.keep(key(lock="b2"), archives(tmp_path / "ws"))
    assert [e.meta["key"] for e in cache.entries()] == [key(lock="b2").digest]


async def test_environments_expire_and_the_least_recently_used_go_first(
        tmp_path: Path) -> None:
    cache = WarmCache(tmp_path / "warm", 1, 12)  # 1 MB: room for two of these
    size = 200 * 1024  # two archives each: 400 KB an environment
    first = await cache.keep(key("acme/a"), archives(tmp_path / "a", size))
    await cache.keep(key("acme/b"), archives(tmp_path / "b", size))
    cache.touch(first)  # a is used again: b is now the least recently used
    await cache.keep(key("acme/c"), archives(tmp_path / "c", size))
    kept = sorted(e.meta["repo"] for e in cache.entries())
    assert kept == ["acme/a", "acme/c"]
    assert sum(e.size for e in cache.entries()) <= 1024 * 1024
    # Past its lifetime an environment is not used, and the next eviction removes it.
    assert cache.find(key("acme/a")) is not None
    assert cache.find(key("acme/a")) is not None
    later = time.time() + 13 * 3600
    assert [e.meta["repo"] for e in cache.evict(now=later)] == ["acme/a", "acme/c"]
    assert cache.entries() == []


async def test_an_archive_that_is_a_link_is_never_followed(tmp_path: Path) -> None:
    """The sandbox writes the archives: one swapped for a link to a host file is refused."""
    secret = tmp_path / "host-secret"
    secret.write_text("host only\n")
    tree = archives(tmp_path / "ws")
    (tree / OUT / "home.tar").unlink()
    (tree / OUT / "home.tar").symlink_to(secret)
    with pytest.raises(OSError):
        await WarmCache(tmp_path / "warm", 100, 12).keep(key(), tree)
    link = archives(tmp_path / "ws2")
    os.rename(link / ".git", link / "real-git")
    (link / ".git").symlink_to(link / "real-git")
    with pytest.raises(OSError):
        await WarmCache(tmp_path / "warm", 100, 12).keep(key(), link)


def test_the_cache_command_lists_and_clears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    monkeypatch.setenv("HANDOFF_DATA_DIR", str(tmp_path))
    cache = WarmCache(tmp_path / "warm", 100, 12)
    asyncio.run(cache.keep(key(), archives(tmp_path / "a")))
    asyncio.run(cache.keep(key("acme/web"), archives(tmp_path / "b")))
    assert main(["cache", "list"]) == 0
    listed = capsys.readouterr().out
    assert "acme/calc" in listed and "acme/web" in listed and "installation 1" in listed
    assert main(["cache", "clear", "acme/web"]) == 0
    assert "removed 1 environment" in capsys.readouterr().out
    assert [e.meta["repo"] for e in cache.entries()] == ["acme/calc"]
    assert main(["cache", "clear"]) == 0
    assert cache.entries() == []


# End to end, with the local sandbox (commands on the host): the setup appends to a counter
# file outside the work tree, so the test sees whether it ran.
def setup_config(counter: Path) -> str:
    return (f"test_command: {TEST_COMMAND}\n"
            f"setup_command: echo ran >> {counter} && mkdir -p .venv \"$HOME/.local\" && "
            "echo v > .venv/marker && echo h > \"$HOME/.local/marker\"\n")


PREPARED = {"test_prepared.py": "import os\n\n\ndef test_prepared():\n"
                                "    assert os.path.exists('.venv/marker')\n"
                                "    assert os.path.exists(os.path.expanduser("
                                "'~/.local/marker'))\n",
            "requirements.txt": "six\n"}


def transcript(job: Job) -> list[dict[str, object]]:
    lines = Path(job.result.agent.transcript).read_text().splitlines()
    return [json.loads(line) for line in lines]


async def job_on(s: Stack, repo: str) -> Job:
    job = await s.handed_over(repo, "add() subtracts", "Fix add().")
    assert job.state == "succeeded", job.reason
    return job


async def test_a_second_job_starts_warm_and_a_changed_lock_file_cold(tmp_path: Path) -> None:
    counter = tmp_path / "setup-runs"
    files = {**BUGGY_REPO, **PREPARED, ".github/handoff.yml": setup_config(counter)}
    async with stack(tmp_path, FIX_SCRIPT, sandbox="local", per_conversation=True,
                     dashboard_token=SecretStr(TOKEN)) as s:
        repo = s.sim.add_repo(REPO, files)
        first = await job_on(s, REPO)
        assert counter.read_text() == "ran\n"
        assert (first.result.setup.environment, first.result.setup.environment_reason) == (
            "cold", "no environment kept for this repository yet; kept for the next jobs "
            "(0 MB)")
        assert "keep environment" in first.result.timings

        warm_before = metrics.ENVIRONMENTS.labels("warm")._value.get()
        second = await job_on(s, REPO)
        assert counter.read_text() == "ran\n"  # the setup did not run again
        assert metrics.ENVIRONMENTS.labels("warm")._value.get() == warm_before + 1
        assert second.result.setup.environment == "warm", second.result.setup.environment_reason
        # What the setup made is there all the same: the baseline's test of it passed.
        assert "1 passed, 1 failed" in second.result.tests.before, second.result
        assert [e["state"] for e in transcript(second) if e["kind"] == "environment"] == \
            ["warm"]
        # The dashboard's job page says so, with the reason, in its status and transcript.
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            page = (await http.get(s.sim.webhook_url.replace(
                "/webhook", f"/jobs/{second.id}"))).text
        assert "<dt>Environment</dt><dd>warm: the setup and its lock and manifest files are " \
            "as when this environment was kept" in page
        assert "<h3>Started warm" in page
        pr = max((i for i in s.sim.get_repo(REPO).issues.values() if i.pull),
                 key=lambda i: i.number)
        assert pr.pull is not None
        pushed = subprocess.run(["git", "ls-tree", "-r", "--name-only", pr.pull.head],
                                cwd=repo.path, capture_output=True, text=True).stdout.split()
        assert not [p for p in pushed if p.startswith(".venv")], pushed

        commit_files(repo.path, "main", {"requirements.txt": "six==1.16.0\n"}, "pin six")
        third = await job_on(s, REPO)
        assert counter.read_text() == "ran\nran\n"
        assert third.result.setup.environment == "cold"
        assert third.result.setup.environment_reason.startswith(
            "`requirements.txt` changed since the last environment was kept")

        # Another repository with the same files never starts from this one's.
        s.sim.add_repo("acme/twin", files)
        twin = await job_on(s, "acme/twin")
        assert twin.result.setup.environment == "cold"
        assert counter.read_text() == "ran\nran\nran\n"


@pytest.mark.podman
async def test_a_warm_start_in_podman_downloads_nothing(tmp_path: Path) -> None:
    """The declared dependencies are installed from the package index once: the second job's
    sandbox has them without asking the index again."""
    files = {**BUGGY_REPO, "requirements.txt": "tinydep\n",
             "test_dep.py": "import tinydep\n\n\ndef test_dep():\n"
                            "    assert tinydep.ANSWER == 42\n"}
    hits: list[str] = []
    built = wheel(tmp_path, "tinydep", "ANSWER = 42\n")
    with package_index(tmp_path / "index", [built], hits=hits) as index:
        async with stack(tmp_path, FIX_SCRIPT, pip_index_url=index, per_conversation=True,
                         egress_allow_private=True) as s:
            repo = s.sim.add_repo(REPO, files)
            first = await job_on(s, REPO)
            assert first.result.setup.environment == "cold"
            downloads = [h for h in hits if h.endswith(".whl")]
            assert len(downloads) == 1, hits
            second = await job_on(s, REPO)
            assert second.result.setup.environment == "warm", second.result.setup.environment_reason
            assert [h for h in hits if h.endswith(".whl")] == downloads  # nothing new
            assert "1 passed, 1 failed" in second.result.tests.before, second.result
            commit_files(repo.path, "main", {"requirements.txt": "tinydep==1.0\n"}, "pin")
            third = await job_on(s, REPO)
            assert third.result.setup.environment == "cold"
            assert len([h for h in hits if h.endswith(".whl")]) == 2


async def test_an_environment_holding_a_secret_is_never_kept(tmp_path: Path) -> None:
    """A setup step's secret (as it is, in base64 or in hex) in what it left: not kept."""
    cache = WarmCache(tmp_path / "warm", 100, 12)
    token = "s3cr3t-registry-token-0123"
    for n, form in enumerate([token, base64.b64encode(token.encode()).decode(),
                              token.encode().hex()]):
        tree = archives(tmp_path / f"ws{n}")
        (tree / OUT / "home.tar").write_bytes(b"x" * (1 << 20) + f"auth={form}".encode())
        with pytest.raises(OSError, match="holds a secret"):
            await cache.keep(key(), tree, [token])
    assert cache.entries() == []
    await cache.keep(key(), archives(tmp_path / "clean"), [token])
    assert len(cache.entries()) == 1


async def test_the_sandbox_archives_what_the_setup_left_unless_it_is_too_large(
        tmp_path: Path) -> None:
    co = Checkout(tmp_path / "git", tmp_path / "ws")
    co.work_tree.mkdir()
    subprocess.run(["git", "init", "-q", f"--separate-git-dir={co.git_dir}",
                    str(co.work_tree)], check=True)
    (co.work_tree / ".git").unlink()
    (co.work_tree / ".git").mkdir()  # the sandbox's own .git, as a job's work tree has
    (co.work_tree / ".gitignore").write_text(".venv/\n")
    (co.work_tree / ".venv/lib").mkdir(parents=True)
    (co.work_tree / ".venv/lib/big.bin").write_bytes(os.urandom(3 << 20))
    box = await LocalBackend().start(1, co.work_tree)
    try:
        await box.exec("mkdir -p \"$HOME/.local\" && echo h > \"$HOME/.local/mark\"")
        assert "too large to keep (4 MB, 2 MB of room)" in await capture(box, co, 2)
        assert await capture(box, co, 100) == ""
    finally:
        await box.close()
    listed = {n: subprocess.run(["tar", "-tf", str(co.work_tree / OUT / n)],
                                capture_output=True, text=True).stdout.split()
              for n in ("home.tar", "tree.tar")}
    assert listed["home.tar"] == [".local/", ".local/mark"]
    assert ".venv/lib/big.bin" in listed["tree.tar"] and ".gitignore" in listed["tree.tar"]


def work_tree(root: Path) -> Checkout:
    """A job's trusted git directory and work tree (with the sandbox's own ``.git``)."""
    co = Checkout(root / "git", root / "ws")
    co.work_tree.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", f"--separate-git-dir={co.git_dir}",
                    str(co.work_tree)], check=True)
    (co.work_tree / ".git").unlink()
    (co.work_tree / ".git").mkdir()
    (co.work_tree / "app.py").write_text("print('mine')\n")
    return co


@pytest.mark.parametrize("engine", [pytest.param("podman", marks=pytest.mark.podman),
                                    "bubblewrap"])
async def test_each_backend_keeps_and_unpacks_an_environment(tmp_path: Path,
                                                             engine: str) -> None:
    """What a setup left in the work tree comes back in another job's sandbox, beside that
    job's own files, which it never replaces; read from the read-only mount."""
    if engine == "bubblewrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    backend: Backend = ContainerBackend("podman", IMAGE) if engine == "podman" \
        else BubblewrapBackend()
    first = work_tree(tmp_path / "one")
    box = await backend.start(1, first.work_tree)
    try:
        made = await box.exec("mkdir -p .venv/bin node_modules/left && echo v > .venv/bin/tool"
                              " && echo n > node_modules/left/index.js && echo x > app.py")
        assert made.ok, made.stderr
        assert await capture(box, first, 100) == ""
    finally:
        await box.close()
    cache = WarmCache(tmp_path / "warm", 100, 12)
    entry = await cache.keep(key(), first.work_tree)
    second = work_tree(tmp_path / "two")
    box = await backend.start(2, second.work_tree, mounts=[(entry.path, MOUNT)])
    try:
        done = await box.exec(restore_command(MOUNT))
        assert done.ok, done.stderr
        assert (await box.exec("cat .venv/bin/tool node_modules/left/index.js")).stdout == \
            "v\nn\n"
        assert not (await box.exec(f"touch {MOUNT}/home.tar")).ok  # read-only
    finally:
        await box.close()
    assert (second.work_tree / "app.py").read_text() == "print('mine')\n"  # its own
