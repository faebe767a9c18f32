"""A host without a writable cgroup gets no bubblewrap sandbox, and is told why and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.executor.sandbox.base import Limits, SandboxError
from bot.executor.sandbox.cgroup import Cgroup


def test_no_cgroup_hierarchy_means_no_sandbox_and_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()  # v1 with one hierarchy of the three
    with pytest.raises(SandboxError) as error:
        Cgroup.create("7-job", Limits(), root=tmp_path)
    message = str(error.value)
    assert f"no cgroup v1 hierarchy for pids, cpu under {tmp_path}" in message
    assert "run the worker as root or in a cgroup it may manage, or use the podman backend" \
        in message
    assert not (tmp_path / "memory" / "handoff").exists()  # nothing half made
