"""Handoff's own containers.conf for its Podman calls, unless the operator names one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CONF = Path(__file__).with_name("containers.conf")


def use_default_conf(sandbox: str) -> Path | None:
    """Point ``CONTAINERS_CONF`` at the packaged file when the sandbox is Podman, none is set,
    and runc (the runtime it names) is installed; returns the file it chose, if any.

    Hosts with hybrid cgroups fail under crun and reject ulimits above their hard limits: a
    command typed by hand (``handoff demo``, ``doctor``) must work there as the scripts do.
    """
    if sandbox != "podman" or os.environ.get("CONTAINERS_CONF") or not shutil.which("runc"):
        return None
    os.environ["CONTAINERS_CONF"] = str(CONF)
    return CONF
