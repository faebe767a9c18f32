"""Sandbox behaviour, the same tests against real Podman and real bubblewrap."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.executor.sandbox import Backend, Limits, Sandbox, SandboxError
from bot.executor.sandbox.bubblewrap import BubblewrapBackend
from bot.executor.sandbox.container import ContainerBackend

IMAGE = os.environ.get("HANDOFF_SANDBOX_IMAGE", "handoff-sandbox:dev")
LIST_INTERFACES = "python3 -c \"import socket; print(*(n for _, n in socket.if_nameindex()))\""
LIMITS = Limits(memory_mb=256, cpus=1, pids=64, timeout=30, output_cap=4096)


def make(name: str) -> Backend:
    if name == "podman":  # its tests are marked podman: skipped when it is not ready
        return ContainerBackend("podman", IMAGE, LIMITS)
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    return BubblewrapBackend(LIMITS)


@pytest.fixture(params=[pytest.param("podman", marks=pytest.mark.podman), "bubblewrap"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return make(request.param)


@pytest.fixture
async def box(backend: Backend, tmp_path: Path) -> AsyncIterator[Sandbox]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "hello.txt").write_text("hello from the host\n")
    sandbox = await backend.start("t", ws)
    yield sandbox
    await sandbox.close()


async def test_command_sees_and_changes_workspace(box: Sandbox, tmp_path: Path) -> None:
    result = await box.exec("cat hello.txt && echo changed > new.txt && pwd")
    assert result.ok and result.stdout == "hello from the host\n/workspace\n"
    assert (tmp_path / "ws" / "new.txt").read_text() == "changed\n"


async def test_host_secrets_and_paths_are_invisible(backend: Backend, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDOFF_MODEL_API_KEY", "sk-canary-0123456789abcdef")
    data_dir = tmp_path / "handoff-data"
    data_dir.mkdir()
    (data_dir / "handoff.db").write_text("secret rows")
    ws = tmp_path / "ws"
    ws.mkdir()
    box = await backend.start("iso", ws)
    try:
        result = await box.exec(
            f"env; cat /proc/1/environ /proc/self/environ 2>/dev/null | tr '\\0' '\\n'; "
            f"ls {data_dir} 2>&1; ls /root 2>&1; ls {Path.home()} 2>&1; id -u")
        assert "sk-canary" not in result.stdout + result.stderr
        assert "handoff.db" not in result.stdout
        assert result.stdout.strip().splitlines()[-1] != "0"  # not root inside
    finally:
        await box.close()


async def test_no_network_by_default(box: Sandbox) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await box.exec(
            "python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
            f"{port}), 3); print('CONNECTED')\"")
    finally:
        server.close()
    assert result.exit_code != 0 and "CONNECTED" not in result.stdout


async def test_egress_only_through_the_proxy_and_only_while_allowed(
        backend: Backend, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    box = await backend.start("net", ws, egress=["pypi.org"])
    try:
        during = await box.exec(LIST_INTERFACES + "; echo $HTTPS_PROXY")
        await box.set_egress([])
        after = await box.exec(LIST_INTERFACES + "; echo proxy=$HTTPS_PROXY")
    finally:
        await box.close()
    assert set(during.stdout.split()[:-1]) <= {"lo"}  # never an interface of its own
    assert during.stdout.split()[-1].startswith("http://127.0.0.1:")
    assert after.stdout.split()[-1] == "proxy="


async def test_timeout_kills_and_says_so(box: Sandbox) -> None:
    result = await box.exec("echo started; sleep 30; echo never", timeout=2)
    assert result.timed_out and not result.ok
    assert "started" in result.stdout and "never" not in result.stdout
    assert "time limit" in result.describe()


async def test_output_flood_is_cut(box: Sandbox) -> None:
    result = await box.exec("yes flood | head -c 2000000; echo done >&2")
    assert result.ok and result.truncated
    assert len(result.stdout) == LIMITS.output_cap
    assert result.cut_bytes == 2000000 - LIMITS.output_cap
    assert "done" in result.stderr


async def test_memory_limit_kills(backend: Backend, box: Sandbox) -> None:
    if not backend.supports("memory"):
        pytest.skip(f"{backend.name} has no cgroup memory limit: allocations fail instead of "
                    "being killed, so there is no OOM to report")
    result = await box.exec("python3 -c \"x = bytearray(600 * 1024 * 1024); x[::4096] = "
                            "b'1' * len(x[::4096]); print('survived')\"")
    assert result.oom_killed and "survived" not in result.stdout
    assert "out of memory" in result.describe()


async def test_fork_bomb_stopped_by_pids_limit(backend: Backend, box: Sandbox) -> None:
    if not backend.supports("pids"):
        pytest.skip(f"{backend.name} has no pids cgroup to stop a fork bomb")
    # Waits with builtins only: a `sleep` would itself wait for a pid the bomb holds.
    result = await box.exec("bomb() { bomb | bomb & }; bomb; end=$((SECONDS+2)); "
                            "while [ $SECONDS -lt $end ]; do :; done; echo alive", timeout=20)
    assert "alive" in result.stdout  # the sandbox survived, the bomb did not spread
    after = await box.exec("echo still-usable")
    assert after.ok and after.stdout.strip() == "still-usable"


def _containers(label: str) -> list[str]:
    out = subprocess.run(["podman", "ps", "-a", "--filter", f"label={label}", "--format",
                          "{{.Names}}"], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.podman
async def test_no_container_left_after_close(tmp_path: Path) -> None:
    backend = make("podman")
    ws = tmp_path / "ws"
    ws.mkdir()
    box = await backend.start("gone-1", ws)
    assert _containers("handoff.job=gone-1")
    await box.close()
    assert _containers("handoff.job=gone-1") == []


@pytest.mark.podman
async def test_a_start_cancelled_midway_leaves_no_container(tmp_path: Path) -> None:
    """A job cancelled while its (baseline) sandbox starts: the engine finishes making the
    container all the same, and it is removed rather than left running. Cancelled at several
    moments of the start, as `podman run` takes longer or shorter."""
    cancelled = 0
    for n, delay in enumerate((0.05, 0.15, 0.3, 0.6, 1.0)):
        ws = tmp_path / f"ws{n}"
        ws.mkdir()
        starting = asyncio.ensure_future(make("podman").start(f"cancelled-{n}", ws))
        await asyncio.sleep(delay)
        starting.cancel()
        try:
            box = await starting
        except asyncio.CancelledError:
            cancelled += 1
        else:  # it was up before the cancel came
            await box.close()
    assert cancelled
    await asyncio.sleep(3)  # time for a `podman run` left to itself to make the container
    assert [name for n in range(5) for name in _containers(f"handoff.job=cancelled-{n}")] == []


@pytest.mark.podman
async def test_orphan_of_killed_worker_is_removed(tmp_path: Path) -> None:
    backend = make("podman")
    ws = tmp_path / "ws"
    ws.mkdir()
    code = ("import asyncio, sys, pathlib\n"
            "from bot.executor.sandbox.container import ContainerBackend\n"
            "async def main():\n"
            f"    b = ContainerBackend('podman', {IMAGE!r})\n"
            f"    await b.start('orphan-1', pathlib.Path({str(ws)!r}))\n"
            "    print('started', flush=True)\n"
            "    await asyncio.sleep(3600)\n"
            "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert _containers("handoff.job=orphan-1")
    removed = await backend.cleanup_orphans()
    assert any(name.startswith("handoff-job-orphan-1") for name in removed)
    assert _containers("handoff.job=orphan-1") == []


@pytest.mark.podman
async def test_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    make("podman")
    backend = ContainerBackend("podman", "handoff-no-such-image:0", LIMITS)
    with pytest.raises(SandboxError, match="could not start"):
        await backend.start("x", tmp_path)
