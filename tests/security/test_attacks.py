"""Each attack from the security audit, against real Podman and real bubblewrap.

The attacks live in ``bench/security.py`` (the same list the bench prints as a table); every
one succeeded on the code the audit examined (commit 94451c3) and must be blocked now. Each
assertion shows the attack's evidence: what a person checking the sandbox would look at.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import security
from bench.security import Lab

IMAGE = security.IMAGE


@pytest.fixture(params=[pytest.param("podman", marks=pytest.mark.podman), "bubblewrap"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    if request.param == "bubblewrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    root = Path(tempfile.mkdtemp(prefix="handoff-sec-"))
    # Ports 18600-18699 on 127.0.0.1: a block per backend so both can run side by side.
    yield Lab(request.param, root, port_base=18600 if request.param == "podman" else 18650)
    shutil.rmtree(root, ignore_errors=True)


async def check(lab: Lab, attack: security.Callable[[Lab], security.Awaitable[security.Verdict]]
                ) -> str:
    blocked, evidence = await attack(lab)
    assert blocked, f"{attack.__name__} is possible on {lab.backend_name}: {evidence}"
    return evidence


async def test_setup_phase_cannot_reach_host_ports_and_denied_hosts_are_reported(
        lab: Lab) -> None:
    evidence = await check(lab, security.setup_phase_reaches_host_port)
    assert "allowed host: package index" in evidence  # the allowlisted registry works
    assert "denied: ['127.0.0.1:" in evidence  # the refused host is recorded for the PR


async def test_fork_bomb_is_held_to_the_pids_limit(lab: Lab) -> None:
    await check(lab, security.fork_bomb)


async def test_four_memory_hogs_stay_under_the_memory_limit(lab: Lab) -> None:
    await check(lab, security.memory_hog)


async def test_filling_the_workspace_kills_the_command_and_says_so(lab: Lab) -> None:
    evidence = await check(lab, security.disk_fill)
    assert "past its 64 MB disk limit" in evidence


async def test_filling_tmp_leaves_the_sandbox_usable(lab: Lab) -> None:
    await check(lab, security.tmp_fill)


async def test_setsid_survivor_is_gone_before_the_next_command_gets_a_key(lab: Lab) -> None:
    await check(lab, security.setsid_survivor_reads_secret)


async def test_no_nested_user_namespace(lab: Lab) -> None:
    await check(lab, security.nested_user_namespace)


async def test_sandbox_is_never_host_root(lab: Lab) -> None:
    if os.geteuid() != 0:
        pytest.skip("the worker is not root here, so the sandbox cannot be host root")
    await check(lab, security.sandbox_is_host_root)


async def test_sandbox_of_a_dead_worker_is_reaped_by_a_live_one(lab: Lab) -> None:
    await check(lab, security.orphan_of_dead_worker)


@pytest.fixture
def harness_lab() -> Iterator[Lab]:
    """The harness attacks use no sandbox: git and the spec run on the host."""
    root = Path(tempfile.mkdtemp(prefix="handoff-sec-"))
    yield Lab("none", root, port_base=18690)
    shutil.rmtree(root, ignore_errors=True)


async def test_host_git_ignores_everything_planted_in_the_agent_git_dir(
        harness_lab: Lab) -> None:
    evidence = await check(harness_lab, security.planted_git_config)
    assert "host commands fired: none" in evidence and "thief saw nothing" in evidence


async def test_symlinked_instructions_and_settings_read_nothing_from_the_host(
        harness_lab: Lab) -> None:
    evidence = await check(harness_lab, security.symlinked_instructions_and_settings)
    assert "outside the repository" in evidence


async def test_issue_text_cannot_close_its_fence_or_hide_instructions(harness_lab: Lab) -> None:
    await check(harness_lab, security.fence_escape_and_hidden_text)


async def test_baseline_copy_is_built_from_git_while_the_agent_swaps_in_symlinks(
        lab: Lab) -> None:
    """Audit 3, C1: the agent swaps files and folders for links to a root-only secret, a
    private mirror and /dev/null while the root worker makes the baseline copy."""
    evidence = await check(lab, security.baseline_copy_race)
    assert "rounds" in evidence  # the flipper ran through the whole copy


async def test_baseline_copy_never_reads_a_device(lab: Lab) -> None:
    """Audit 3, C1: files swapped for links to /dev/zero during the copy."""
    if os.geteuid() != 0:
        pytest.skip("bounding the copy's disk (a tmpfs) needs root")
    await check(lab, security.baseline_copy_reads_device)


async def test_pathspec_magic_and_non_utf8_names_cannot_hide_links_from_the_push_check(
        harness_lab: Lab) -> None:
    """Audit 3, M3: `:evil-link`, `\\377-link` and a `:vendor` gitlink are refused as the
    plain link is."""
    evidence = await check(harness_lab, security.push_check_bypass_names)
    assert "not UTF-8" in evidence and "embedded git repository" in evidence


async def test_terminal_escapes_in_names_reach_no_reason_or_log_line(harness_lab: Lab) -> None:
    evidence = await check(harness_lab, security.terminal_escapes_in_names)
    assert "\\x1b]0;OWNED-TITLE" in evidence  # escaped, still readable


def test_giving_the_work_tree_to_the_sandbox_user_follows_no_link(tmp_path: Path) -> None:
    """The root worker chowns a work tree before a sandbox starts: a folder that is (or was
    swapped for) a link to a host folder keeps the host folder's owner."""
    if os.geteuid() != 0:
        pytest.skip("only root can give files away")
    from bot.executor.sandbox.base import chown_tree

    host = tmp_path / "host-secrets"
    host.mkdir(mode=0o700)
    (host / "key").write_text("secret")
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src/app.py").write_text("x = 1\n")
    (ws / "link").symlink_to(host)
    (ws / "src/up").symlink_to(host / "key")
    chown_tree(ws, 1000)
    assert {p.lstat().st_uid for p in [ws, ws / "src", ws / "src/app.py", ws / "link",
                                       ws / "src/up"]} == {1000}
    assert host.stat().st_uid == 0 and (host / "key").stat().st_uid == 0


async def test_a_fast_writer_cannot_overshoot_the_workspace_limit(lab: Lab) -> None:
    """Audit 3, row 5: with the work tree on its own volume (a root worker), no more than
    the limit and its margin reaches the disk, and the job still fails as disk-limit."""
    from bot.executor import volume

    if not volume.available():
        pytest.skip("volumes need a root worker with loop devices")
    evidence = await check(lab, security.disk_fill_overshoot)
    assert "past its 64 MB disk limit" in evidence
