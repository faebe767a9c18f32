"""The egress allowlist: a per-sandbox HTTP(S) forward proxy on a unix socket, in its own process.

A sandbox never has a network interface. When a phase needs egress (the setup command's
package downloads, an external agent CLI's model API), the sandbox's command runs beside a
small relay (``relay.py``, mounted read-only) that listens on the sandbox's own 127.0.0.1 and
forwards every connection to this proxy's unix socket, the only way out.

The socket exists only while the allowlist is non-empty: the first non-empty list starts the
proxy's process (``proxy_server.py``, which binds it), an empty one stops that process and
the socket is gone. In that process a sandbox's flood of connections meets the process's own
file and memory limits and a connection cap; the worker only reads its short event lines.
What it refused is kept here for the PR: hosts shown only when their names are plain
(``proxy_server.recordable``), at most ``MAX_RECORDED``, the rest counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bot.executor.sandbox.base import SandboxError
from bot.executor.sandbox.proxy_server import (
    KINDS,
    MAX_ALLOWED,
    MAX_RECORDED,
    MISMATCH,
    recordable,
)

log = logging.getLogger("handoff.egress")

RELAY_SOURCE = Path(__file__).with_name("relay.py")
SERVER_SOURCE = Path(__file__).with_name("proxy_server.py")
MOUNT = "/run/handoff-egress"  # where the sandbox sees the socket and the relay
SOCKET_NAME = "proxy.sock"
RELAY_NAME = "relay.py"
START_TIMEOUT = 15.0
STOP_GRACE = 2.0
UNNAMED = "unnamed"  # ``refused_by_kind``'s group for the count of hosts not named


def _measured() -> dict[str, str]:
    """Coverage.py's own variables, when a test run measures the processes it starts (they
    hold its settings, no secret): the proxy's process is measured like the rest."""
    return {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_PROCESS_")}


def _recordable_label(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return port.isdigit() and recordable(host[1:-1] if host.startswith("[") else host)


class EgressProxy:
    """One sandbox's proxy: its socket lives in ``directory``, which the sandbox mounts."""

    def __init__(self, directory: Path, allow_private: bool = False, upstream: str = "") -> None:
        self.directory = directory
        self.allow: list[str] = []
        self.allow_private = allow_private
        self.upstream = upstream  # the operator's proxy (``Settings.egress_upstream_proxy``)
        self.denied: list[str] = []  # host:port, in the order first refused
        self.kinds: dict[str, str] = {}  # host:port in ``denied``: why (proxy_server.KINDS)
        self.others = 0  # refusals not in ``denied``: odd names, or past the cap
        self.allowed: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0  # a TCP proxy's (Kubernetes)
        self._reader: asyncio.Task[None] | None = None
        self._child_others = 0
        self._ready: asyncio.Future[None] | None = None
        self._syncs: dict[int, asyncio.Future[None]] = {}
        self._sync_count = 0

    @classmethod
    async def create(cls, prefix: str, allow_private: bool = False,
                     uid: int | None = None, upstream: str = "") -> EgressProxy:
        """A proxy in a fresh folder holding the relay, readable by the sandbox's user; no
        socket yet (``set_allow`` makes it)."""
        directory = Path(tempfile.mkdtemp(prefix=prefix))
        directory.chmod(0o755)
        shutil.copyfile(RELAY_SOURCE, directory / RELAY_NAME)
        (directory / RELAY_NAME).chmod(0o644)
        proxy = cls(directory, allow_private, upstream)
        if uid is not None and os.geteuid() == 0:
            os.chown(directory, uid, uid)
        return proxy

    @property
    def active(self) -> bool:
        return bool(self.allow)

    @property
    def socket(self) -> Path:
        return self.directory / SOCKET_NAME

    @property
    def refused(self) -> list[str]:
        """What a person reads: the recorded hosts, then how many more were refused."""
        more = self.others + self._child_others
        return [*self.denied, *([f"{more} more refused, names not shown"] if more else [])]

    @property
    def refused_by_kind(self) -> dict[str, list[str]]:
        """``refused`` grouped by why (``proxy_server.KINDS``, in that order); the count of
        the rest under ``UNNAMED``."""
        groups = {kind: [h for h in self.denied if self.kinds.get(h) == kind] for kind in KINDS}
        more = self.refused[len(self.denied):]
        return {k: v for k, v in groups.items() if v} | ({UNNAMED: more} if more else {})

    async def set_allow(self, allow: list[str]) -> None:
        """The hosts later connections may reach; the socket exists only while there are any."""
        self.allow = [a.strip() for a in allow if a.strip()]
        if not self.allow:
            await self._stop()
        elif self.process is None:
            await self.start(["unix", str(self.socket)])
        else:
            await self.send(self.policy())

    def policy(self) -> dict[str, Any]:
        """The control line that sets what the proxy allows and how it reaches it."""
        return {"allow": self.allow, "allow_private": self.allow_private,
                "upstream": self.upstream}

    async def sync(self) -> None:
        """Wait until what the proxy refused so far is in ``denied`` and ``others``."""
        if self.process is None or self.process.returncode is not None:
            return
        self._sync_count += 1
        number = self._sync_count
        done = self._syncs[number] = asyncio.get_running_loop().create_future()
        await self.send({"sync": number})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, 5)

    async def close(self) -> None:
        await self._stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    async def start(self, where: list[str]) -> None:
        """Start the proxy's process serving ``where`` (see ``proxy_server.listen``)."""
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self._ready = asyncio.get_running_loop().create_future()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(SERVER_SOURCE), *where,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={"PATH": os.environ.get("PATH", ""),
                                                 "LANG": "C.UTF-8", **_measured()})
        self._reader = asyncio.ensure_future(self._events(self.process))
        await self.send(self.policy())
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            process = self.process
            await self._stop()
            error = (await process.stderr.read(4096)).decode(errors="replace").strip() \
                if process.stderr else ""
            raise SandboxError(f"the egress proxy did not start: {error or exc}") from None

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(json.dumps(command).encode() + b"\n")
            await self.process.stdin.drain()

    async def _stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, STOP_GRACE)
        self.others += self._child_others
        self._child_others = 0
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    async def _events(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            with contextlib.suppress(ValueError, TypeError):
                self.event(json.loads(line))
        for done in self._syncs.values():  # nothing more will come
            if not done.done():
                done.set_result(None)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(OSError(f"exit code {await process.wait()}"))

    def event(self, event: dict[str, Any]) -> None:
        """One line from the proxy: ready, a refused or allowed host, a count, a sync."""
        if event.get("ready") and self._ready is not None and not self._ready.done():
            self.port = int(event.get("port") or 0)
            self._ready.set_result(None)
        if isinstance(stranger := event.get("stranger"), str) and recordable(stranger):
            log.warning("egress proxy: refused a connection from %s (not the sandbox pod)",
                        stranger)
        if isinstance(denied := event.get("denied"), str):
            self._record(denied, str(event.get("why", "")), str(event.get("kind", "")))
        if isinstance(others := event.get("others"), int):
            self._child_others = others
        if isinstance(allowed := event.get("allowed"), str) and \
                allowed not in self.allowed and len(self.allowed) < MAX_ALLOWED:
            self.allowed.append(allowed)
        if (done := self._syncs.pop(event.get("synced", 0), None)) and not done.done():
            done.set_result(None)

    def _record(self, host: str, why: str, kind: str) -> None:
        if host in self.denied:
            return
        if not _recordable_label(host) or len(self.denied) >= MAX_RECORDED:
            self.others += 1
            return
        self.denied.append(host)
        self.kinds[host] = kind if kind in KINDS else MISMATCH
        log.warning("egress denied: %s (%s)", host, why if why.isprintable() else "refused")
