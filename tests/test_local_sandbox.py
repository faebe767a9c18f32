"""The local sandbox backend (tests only, isolates nothing) keeps the Sandbox protocol:
work tree as working directory, timeout, output cap, stdin, env, the disk limit, and git
reaching the mirror's objects through the mapped mount."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.config import Settings
from bot.doctor import check_engine
from bot.executor.sandbox import Limits, SandboxError, make_backend
from bot.executor.sandbox.local import LocalBackend, LocalSandbox
from bot.executor.workspace import SANDBOX_OBJECTS

LIMITS = Limits(timeout=30, output_cap=1000, workspace_mb=1)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[LocalSandbox]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "hello.txt").write_text("hello\n")
    sandbox = await LocalBackend(LIMITS).start(1, ws, egress=["pypi.org"])
    yield sandbox
    await sandbox.close()


async def test_commands_run_in_the_work_tree_with_a_private_home(box: LocalSandbox,
                                                                 tmp_path: Path) -> None:
    result = await box.exec("cat hello.txt; pwd; echo $HOME; echo made > new.txt")
    assert result.ok, result.stderr
    text, cwd, home = result.stdout.splitlines()
    assert text == "hello" and Path(cwd) == (tmp_path / "ws").resolve()
    assert Path(home) == box.home and box.home.is_dir()
    assert (tmp_path / "ws" / "new.txt").read_text() == "made\n"
    assert box.commands[-1].startswith("cat hello.txt")


async def test_env_stdin_exit_code_and_no_worker_secrets(box: LocalSandbox,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_MODEL_API_KEY", "sk-not-for-the-sandbox")
    result = await box.exec('read -r line; echo "$line/$EXTRA/${HANDOFF_MODEL_API_KEY:-none}";'
                            " exit 4", stdin=b"from-stdin\n", env={"EXTRA": "x"})
    assert result.stdout == "from-stdin/x/none\n"
    assert result.exit_code == 4 and not result.ok and result.describe() == "exit code 4"


async def test_timeout_and_output_cap(box: LocalSandbox) -> None:
    slow = await box.exec("sleep 20", timeout=0.5)
    assert slow.timed_out and not slow.ok and slow.duration < 10
    loud = await box.exec("head -c 5000 /dev/zero | tr '\\0' x")
    assert loud.ok and len(loud.stdout) == 1000 and loud.truncated and loud.cut_bytes == 4000


async def test_egress_is_recorded_never_enforced_and_nothing_is_denied(
        box: LocalSandbox) -> None:
    assert box.allow == ["pypi.org"]
    await box.set_egress([])
    assert box.allow == [] and box.egress_denied == []


async def test_the_disk_limit_stops_the_command_and_every_later_one(
        box: LocalSandbox) -> None:
    result = await box.exec("head -c 3000000 /dev/zero > big.bin; sleep 10")
    assert result.limit == "disk-limit" and "1 MB disk limit" in result.describe()
    assert box.limit_hit is result
    assert await box.exec("echo again") is result  # the sandbox runs no more


async def test_a_closed_sandbox_runs_nothing_and_leaves_no_home(tmp_path: Path) -> None:
    backend = LocalBackend(LIMITS)
    box = await backend.start("x", tmp_path)
    assert backend.live == {box}
    await box.close()
    assert not box.home.exists() and backend.live == set()
    with pytest.raises(SandboxError, match="closed"):
        await box.exec("true")
    assert await backend.cleanup_orphans() == []
    assert backend.supports("disk-limit") and not backend.supports("egress")
    with pytest.raises(SandboxError, match="does not exist"):
        await backend.start("y", tmp_path / "missing")


async def test_git_borrows_the_mirror_objects_through_the_mapped_mount(tmp_path: Path) -> None:
    def git(*args: str, cwd: Path) -> str:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                              text=True).stdout.strip()

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    git("init", "-q", cwd=mirror)
    (mirror / "f.txt").write_text("v1\n")
    git("add", ".", cwd=mirror)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=mirror)
    head = git("rev-parse", "HEAD", cwd=mirror)
    # The agent's .git as the workspace writes it: no objects, borrowed from the sandbox path.
    ws = tmp_path / "ws"
    dot = ws / ".git"
    (dot / "objects/info").mkdir(parents=True)
    (dot / "refs/heads").mkdir(parents=True)
    (dot / "HEAD").write_text("ref: refs/heads/main\n")
    (dot / "refs/heads/main").write_text(head + "\n")
    (dot / "objects/info/alternates").write_text(f"{SANDBOX_OBJECTS}\n")
    box = await LocalBackend(LIMITS).start(2, ws, mounts=[(mirror / ".git/objects",
                                                           SANDBOX_OBJECTS)])
    try:
        shown = await box.exec("git show HEAD:f.txt")
        assert shown.ok and shown.stdout == "v1\n", shown.stderr
    finally:
        await box.close()


def settings(**values: object) -> Settings:
    return Settings(app_id="1", private_key=SecretStr("k"), **values)  # type: ignore[arg-type]


async def test_only_a_named_local_backend_is_built_and_doctor_fails_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("HANDOFF_SANDBOX", raising=False)
    assert settings().sandbox == "podman"  # never the default
    monkeypatch.setenv("HANDOFF_SANDBOX", "local")
    chosen = settings()
    with caplog.at_level(logging.WARNING, "handoff.sandbox"):
        backend = make_backend(chosen)
    assert isinstance(backend, LocalBackend) and backend.name == "local"
    assert "isolated from nothing" in caplog.text
    ok, _, why = await check_engine(chosen)
    assert not ok and "for tests only" in why
    with pytest.raises(SandboxError, match="unknown sandbox backend 'locale'"):
        make_backend(settings(sandbox="locale"))
