"""Kubernetes backend: each sandbox is a Pod in its own namespace, commands run over exec.

The worker needs no privilege: it asks the API server (through kr8s, with the pod's service
account or a kubeconfig) to create the sandbox's NetworkPolicy (no ingress, no egress), then
its Pod (``kube_spec``), fills the pod's work tree over exec (``kube_sync``), and runs each
command over exec (``kube_exec``) under the same kill-everything-after reaper as the container
backend. After every command the host copy of the work tree is brought up to date, because
the host reads it (diffs, commits) as it reads a bind mount elsewhere.

Egress: the worker runs the sandbox's allowlisting proxy on a TCP port of its own pod address
(``KUBERNETES_PROXY_HOST``), accepting only the sandbox pod's address; while a phase may use
the network, the sandbox's NetworkPolicy allows that one address and port, and commands get
the proxy variables. Before the first sandbox is used, a probe checks that the cluster does
enforce the policy: a pod that reaches the proxy while denied all egress stops the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO, Any

from bot import metrics
from bot.executor.sandbox.base import (
    PROCESS_ID,
    WORKDIR,
    CommandResult,
    GuardedSandbox,
    LeaseCheck,
    Limits,
    SandboxError,
    tree_size,
)
from bot.executor.sandbox.container import KILL_OTHERS, LIVE, _alive
from bot.executor.sandbox.egress import EgressProxy
from bot.executor.sandbox.kube_exec import Capped, Sink, pod_exec
from bot.executor.sandbox.kube_spec import (
    LABEL,
    READY,
    SANDBOX_CONTAINER,
    STAGE,
    STAGE_CONTAINER,
    dns_label,
    egress_rules,
    network_policy,
    pod_manifest,
    pod_name,
)
from bot.executor.sandbox.kube_sync import (
    LIST_COMMAND,
    PACK_COMMAND,
    HostTree,
    Listing,
    apply,
    compare,
    pack_in,
    parse_listing,
    tree_bytes,
)

log = logging.getLogger("handoff.sandbox.kubernetes")

START_TIMEOUT = 300.0  # seconds for a pod to be scheduled, pull its image and start
POLL = 0.25
LISTING_CAP = 256 << 20
STOPPED = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError",
           "CreateContainerConfigError"}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                   "all_proxy")
# Reads its variables and command from stdin (their sizes are $1 and $2), then runs the
# command with the next $3 bytes as its stdin under `timeout $4`, killing every other process
# of the pod (but the pause container, PID 1, and the keeper, $5) before and after.
RUNNER = (
    'eval "$(head -c "$1")"; c=$(head -c "$2"; echo x); c=${c%x}; '
    + KILL_OTHERS.replace("KEEPER", "$5")
    + '; head -c "$3" <&0 | timeout -s KILL "$4" bash -c "$c" & p=$!; wait $p; rc=$?; '
    + KILL_OTHERS.replace("KEEPER", "$5") + "; exit $rc"
)
PROBE = 'timeout 3 bash -c "exec 3<>/dev/tcp/$0/$1" 2>/dev/null && echo reachable'


class PodEgressProxy(EgressProxy):
    """The egress proxy on a TCP port of the worker, answering only the sandbox pod's address.

    Its process runs for the sandbox's life (the policy probe needs something listening);
    the pod's NetworkPolicy lets the pod reach it only while a phase may use the network."""

    @classmethod
    async def listen(cls, host: str, ports: range, allow_private: bool,
                     upstream: str = "") -> PodEgressProxy:
        """A proxy on the first free port of ``ports``, tried from a random one on."""
        proxy = cls(Path(tempfile.mkdtemp(prefix="handoff-egress-")), allow_private, upstream)
        try:
            await proxy.start(["tcp", host, str(ports.start), str(ports.stop - 1)])
        except SandboxError as exc:
            await proxy.close()
            raise SandboxError(f"no egress proxy on {host} in {ports.start}-"
                               f"{ports.stop - 1}: {exc}") from None
        return proxy

    async def set_allow(self, allow: list[str]) -> None:
        self.allow = [a.strip() for a in allow if a.strip()]
        await self.send(self.policy())

    async def set_peer(self, address: str) -> None:
        """The one address the proxy answers: the sandbox pod's."""
        await self.send({"peer": address})


class Cluster:
    """The few API calls the backend makes, in one namespace, through kr8s."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._api: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def api(self) -> Any:
        """A kr8s client for the running event loop (in-cluster service account, else
        ``$KUBECONFIG`` or ~/.kube/config)."""
        loop = asyncio.get_running_loop()
        if self._api is None or self._loop is not loop:
            try:
                import kr8s.asyncio
            except ImportError as exc:
                raise SandboxError("the kubernetes backend needs kr8s: pip install "
                                   "'handoff[kubernetes]'") from exc
            try:
                self._api = await kr8s.asyncio.Api(bypass_factory=True, namespace=self.namespace)
            except Exception as exc:  # kr8s raises ValueError, OSError, httpx errors
                raise SandboxError(f"cannot reach the Kubernetes API: {exc}") from exc
            self._loop = loop
        return self._api

    async def close(self) -> None:
        """Close the client's connections (kr8s has no close of its own: its ``Api`` keeps
        an ``httpx.AsyncClient`` it never closes, whose sockets the garbage collector would
        find open). A client of another event loop, gone by now, is only dropped."""
        api, loop, self._api, self._loop = self._api, self._loop, None, None
        session = getattr(api, "_session", None)
        if session is not None and loop is asyncio.get_running_loop():
            await session.aclose()

    async def call(self, method: str, kind: str, name: str = "", body: Any = None,
                   params: dict[str, str] | None = None, missing_ok: bool = False,
                   patch: bool = False) -> dict[str, Any]:
        """One request; errors become SandboxError with the API server's message (a 404
        is ``{}`` when ``missing_ok``)."""
        import kr8s

        api = await self.api()
        version = "networking.k8s.io/v1" if kind == "networkpolicies" else "v1"
        headers = {"Content-Type": "application/merge-patch+json"} if patch else None
        try:
            async with api.call_api(method, version=version, namespace=self.namespace,
                                    url=f"{kind}/{name}" if name else kind, json=body,
                                    params=params, headers=headers) as response:
                result: dict[str, Any] = response.json()
                return result
        except kr8s.ServerError as exc:
            if missing_ok and exc.response is not None and exc.response.status_code == 404:
                return {}
            code = exc.response.status_code if exc.response is not None else "?"
            raise SandboxError(f"{method} {kind}/{name}: {code} {exc}") from exc
        except Exception as exc:  # the connection itself: httpx and kr8s's own errors
            raise SandboxError(f"{method} {kind}/{name}: {exc}") from exc


class KubernetesSandbox(GuardedSandbox):
    """A running sandbox pod around one job's work tree."""

    proxy: PodEgressProxy

    def __init__(self, backend: KubernetesBackend, name: str, workspace: Path,
                 proxy: PodEgressProxy) -> None:
        self.backend, self.name, self.workspace, self.proxy = backend, name, workspace, proxy
        self.cluster = backend.cluster
        self.lock = asyncio.Lock()
        self.keeper = "0"
        self.oom_seen = 0
        self.listing: Listing = {}
        self.egress_open = False
        self.counted = False  # in the sandboxes-running gauge
        self.image_id = ""  # the image as the node resolved it (its digest), once it runs
        self._limit_hit: CommandResult | None = None

    async def raw(self, argv: list[str], stdin: bytes | AsyncIterator[bytes] | None,
                  out: Sink, err: Sink, timeout: float,
                  container: str = SANDBOX_CONTAINER) -> int:
        """One exec in the pod, output to the sinks; its exit code."""
        api = await self.cluster.api()
        return await asyncio.wait_for(pod_exec(api, self.cluster.namespace, self.name,
                                               container, argv, stdin, out, err), timeout)

    async def run(self, argv: list[str], stdin: bytes | AsyncIterator[bytes] | None = None,
                  timeout: float = 60, container: str = SANDBOX_CONTAINER
                  ) -> tuple[int, bytes, bytes]:
        """A small exec: exit code, stdout and stderr (each cut at 64 KiB)."""
        out, err = Capped(1 << 16), Capped(1 << 16)
        code = await self.raw(argv, stdin, out, err, timeout, container)
        return code, bytes(out.data), bytes(err.data)

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None, env: dict[str, str] | None = None
                   ) -> CommandResult:
        """Run a shell command in the work tree, then bring the host's copy up to date.

        ``env`` and the command travel on stdin, never in the exec URL."""
        async with self.lock:
            if self._limit_hit is not None:
                return self._limit_hit
            result = await self._exec(command, timeout or self.backend.limits.timeout,
                                      stdin or b"", env or {})
            await self.proxy.sync()
            if result.exit_code == 125 and not result.limit:
                await self._check_alive(result)
            if not result.limit:
                await self.sync_out(result)
            if result.limit:
                self._limit_hit = result
            return result

    def _variables(self, env: dict[str, str]) -> bytes:
        extra = dict(env)
        if self.proxy.active:
            url = f"http://{self.backend.proxy_host}:{self.proxy.port}"
            extra.update({name: url for name in PROXY_VARIABLES}, NO_PROXY="", no_proxy="")
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in extra.items()).encode()

    async def _exec(self, command: str, timeout: float, stdin: bytes, env: dict[str, str]
                    ) -> CommandResult:
        limits = self.backend.limits
        variables, text = self._variables(env), command.encode()
        argv = ["bash", "-c", RUNNER, "runner", str(len(variables)), str(len(text)),
                str(len(stdin)), f"{timeout:.0f}", self.keeper]
        out, err = Capped(limits.output_cap), Capped(limits.output_cap)
        started = time.monotonic()
        watcher = asyncio.ensure_future(self._watch_disk())
        timed_out, code = False, 137
        try:
            code = await self.raw(argv, variables + text + stdin, out, err, timeout + 15)
        except TimeoutError:  # the API server or the runtime hung: stop the command here
            timed_out = True
            await self._kill_others()
        except SandboxError as exc:
            code = 125
            err(f"{exc}\n".encode())
        finally:
            tripped = await _stop(watcher)
        duration = time.monotonic() - started
        result = CommandResult(exit_code=code, stdout=out.data.decode("utf-8", "replace"),
                               stderr=err.data.decode("utf-8", "replace"), timed_out=timed_out,
                               truncated=bool(out.dropped or err.dropped),
                               cut_bytes=out.dropped + err.dropped, duration=duration)
        if tripped is not None:
            result.limit, result.limit_detail = tripped
        elif code == 137 and not timed_out:
            if duration >= timeout - 0.5:
                result.timed_out = True
            else:
                result.oom_killed = await self._oom_happened()
        return result

    async def _check_alive(self, result: CommandResult) -> None:
        """After a failed exec: a pod evicted for its disk use is the disk limit; a pod
        that ended otherwise is an error."""
        pod = await self.cluster.call("GET", "pods", self.name, missing_ok=True)
        status = pod.get("status") or {}
        if not pod or status.get("phase") in ("Failed", "Succeeded"):
            why = _why(status) if pod else "it was deleted"
            if status.get("reason") == "Evicted" and "ephemeral" in why.lower():
                result.limit, result.limit_detail = "disk-limit", f"the sandbox pod was " \
                    f"evicted for its disk use: {why}"
                return
            raise SandboxError(f"sandbox pod {self.name} is gone: {why}")

    async def _watch_disk(self) -> tuple[str, str] | None:
        """While a command runs, measure the work tree now and then (``du`` in the pod);
        past the limit, kill the command. The emptyDir's sizeLimit is the kubelet's backstop."""
        limit_mb = self.backend.limits.workspace_mb
        interval = 2.0
        while True:
            await asyncio.sleep(interval)
            started = time.monotonic()
            code, out, _ = await self.run(["du", "-sk", WORKDIR], timeout=60)
            first = out.split()[:1]
            used_kb = int(first[0]) if code == 0 and first and first[0].isdigit() else 0
            if used_kb > limit_mb * 1024:
                await self._kill_others()
                return ("disk-limit", f"the workspace grew to {used_kb // 1024} MB, past its "
                        f"{limit_mb} MB disk limit")
            # A big tree takes long to measure: never spend more than a fifth of the time on it.
            interval = max(2.0, 4 * (time.monotonic() - started))

    async def _kill_others(self) -> None:
        with contextlib.suppress(SandboxError, TimeoutError):
            await self.run(["bash", "-c", KILL_OTHERS.replace("KEEPER", self.keeper)], timeout=30)

    async def _oom_happened(self) -> bool:
        """Whether the container's cgroup counted a new OOM kill."""
        with contextlib.suppress(SandboxError, TimeoutError):
            _, out, _ = await self.run(["cat", "/sys/fs/cgroup/memory.events"], timeout=15)
            for line in out.decode().splitlines():
                name, _, count = line.partition(" ")
                if name == "oom_kill" and count.strip().isdigit():
                    happened, self.oom_seen = int(count) > self.oom_seen, int(count)
                    return happened
        return False

    async def find_keeper(self) -> None:
        """The keeper (``sleep infinity``) is the only child of the pod's PID 1 (pause)."""
        code, out, err = await self.run(["cat", "/proc/1/task/1/children"], timeout=30)
        children = out.split()
        if code != 0 or len(children) != 1 or not children[0].isdigit():
            raise SandboxError(f"could not find the sandbox's keeper process: "
                               f"{(err or out).decode(errors='replace').strip()}")
        self.keeper = children[0].decode()

    async def list_tree(self) -> Listing:
        """The pod's work tree as it is now."""
        out, err = Capped(LISTING_CAP), Capped(4096)
        code = await self.raw(LIST_COMMAND, None, out, err, 300)
        if code != 0 or out.dropped:
            why = err.data.decode(errors="replace").strip() or "the listing is too large"
            raise SandboxError(f"could not list the sandbox's work tree: {why}")
        return await asyncio.to_thread(parse_listing, bytes(out.data))

    async def sync_out(self, result: CommandResult) -> None:
        """Bring the host's work tree up to date with the pod's; a tree grown past the
        disk limit marks ``result`` instead (and is not copied: the job ends)."""
        after = await self.list_tree()
        limit_mb = self.backend.limits.workspace_mb
        if tree_bytes(after) > limit_mb * 1024 * 1024:
            result.limit = "disk-limit"
            result.limit_detail = (f"the workspace grew to {tree_bytes(after) >> 20} MB, past "
                                   f"its {limit_mb} MB disk limit")
            return
        changes = compare(self.listing, after)
        if changes:
            packed = await self._pack(changes.files) if changes.files else None
            try:
                await asyncio.to_thread(apply, HostTree(self.workspace), changes, after, packed)
            finally:
                if packed is not None:
                    packed.close()
        self.listing = after

    async def _pack(self, files: list[str]) -> IO[bytes]:
        """A tar of the named files of the pod's work tree, spooled on the host."""
        names = b"\0".join(f.encode("utf-8", "surrogateescape") for f in files) + b"\0"
        spool = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # noqa: SIM115 (returned)
        err = Capped(4096)
        code = await self.raw([*PACK_COMMAND, str(len(names))], names, spool.write, err, 600)
        if code not in (0, 1):  # 1: a file changed while read; what came is still kept
            log.warning("sandbox %s: tar of changed files ended with %d: %s", self.name, code,
                        err.data.decode(errors="replace").strip())
        spool.seek(0)
        return spool

    async def set_egress(self, allow: list[str]) -> None:
        await self.proxy.set_allow(allow)
        if self.proxy.active != self.egress_open:
            await self.backend.open_egress(self, self.proxy.active)
            self.egress_open = self.proxy.active

    async def close(self) -> None:
        try:
            await self.backend.remove(self.name)
        finally:
            if self.counted:
                metrics.SANDBOXES.labels(self.backend.name).dec()
                self.counted = False
            self.backend.live.discard(self.name)
            await self.proxy.close()


class KubernetesBackend:
    """Sandbox pods in one namespace, reaped by this deployment's leases."""

    name = "kubernetes"

    def __init__(self, image: str = "handoff-sandbox:dev", limits: Limits | None = None,
                 namespace: str = "handoff-sandboxes", proxy_host: str = "",
                 proxy_ports: range = range(40000, 41000), deadline: int = 7200,
                 runtime_class: str = "", allow_private: bool = False,
                 deployment: str = "", upstream_proxy: str = "") -> None:
        self.image, self.limits = image, limits or Limits()
        self.cluster = Cluster(namespace)
        self.proxy_host, self.proxy_ports = proxy_host or _own_address(), proxy_ports
        self.deadline, self.runtime_class = deadline, runtime_class
        self.allow_private, self.deployment = allow_private, deployment
        self.upstream_proxy = upstream_proxy
        self.live = LIVE
        self.host = socket.gethostname()
        self.isolation_checked = False

    def supports(self, feature: str) -> bool:
        return feature in {"memory", "egress", "disk-limit", "persistent", "warm"}

    async def close(self) -> None:
        """Close the API client (the sandboxes are closed with their jobs)."""
        await self.cluster.close()

    async def __aenter__(self) -> KubernetesBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def labels(self, job_id: int | str) -> dict[str, str]:
        return {LABEL: "1", "handoff.job": dns_label(str(job_id), 63),
                "handoff.deployment": self.deployment or "none", "handoff.process": PROCESS_ID}

    def annotations(self, job_id: int | str, owner: str) -> dict[str, str]:
        return {"handoff.job": str(job_id), "handoff.owner": owner, "handoff.host": self.host,
                "handoff.pid": str(os.getpid())}

    async def start(self, job_id: int | str, workspace: Path, egress: list[str] | None = None,
                    image: str | None = None, owner: str = "",
                    mounts: Sequence[tuple[Path, str]] = ()) -> KubernetesSandbox:
        """Start the job's pod with ``workspace`` (and ``mounts``, read-only) copied in.

        Its NetworkPolicy exists before the pod and allows nothing; ``egress`` opens the way
        to the proxy once the pod runs."""
        name = pod_name(job_id, uuid.uuid4().hex[:6])
        self.live.add(name)  # before it exists, so a concurrent reaping never takes it
        try:
            proxy = await PodEgressProxy.listen(self.proxy_host, self.proxy_ports,
                                                self.allow_private, self.upstream_proxy)
        except BaseException:
            self.live.discard(name)
            raise
        box = KubernetesSandbox(self, name, workspace, proxy)
        labels, notes = self.labels(job_id), self.annotations(job_id, owner)
        try:
            await self.cluster.call("POST", "networkpolicies",
                                    body=network_policy(name, self.cluster.namespace, labels,
                                                        notes))
            sizes = [(inside, await asyncio.to_thread(_size_mb, host)) for host, inside in mounts]
            await self.cluster.call("POST", "pods", body=pod_manifest(
                name, self.cluster.namespace, image or self.image, self.limits, labels, notes,
                sizes, self.deadline, self.runtime_class))
            metrics.SANDBOXES.labels(self.name).inc()
            box.counted = True
            await self._wait(name, STAGE_CONTAINER)
            await self._stage(box, workspace, mounts)
            running = await self._wait(name, SANDBOX_CONTAINER)
            await proxy.set_peer(str(running.get("podIP")))
            box.image_id = _image_id(running)
            await box.find_keeper()
            await self._check_isolation(box)
            box.listing = await box.list_tree()
            await box.set_egress(egress or [])
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(box.close())
            raise
        return box

    async def _wait(self, name: str, container: str) -> dict[str, Any]:
        """Poll the pod until ``container`` runs; returns the pod's status."""
        deadline = time.monotonic() + START_TIMEOUT
        key = "initContainerStatuses" if container == STAGE_CONTAINER else "containerStatuses"
        while True:
            status = (await self.cluster.call("GET", "pods", name)).get("status") or {}
            if status.get("phase") in ("Failed", "Succeeded"):
                raise SandboxError(f"sandbox pod {name} ended: {_why(status)}")
            for state in status.get(key) or []:
                if state.get("name") != container:
                    continue
                if "running" in (state.get("state") or {}):
                    return dict(status)
                waiting = (state.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in STOPPED:
                    raise SandboxError(f"sandbox pod {name} cannot start: {waiting['reason']}: "
                                       f"{waiting.get('message', '')}")
            if time.monotonic() > deadline:
                raise SandboxError(f"sandbox pod {name} did not start in {START_TIMEOUT:.0f} s: "
                                   f"{_why(status)}")
            await asyncio.sleep(POLL)

    async def _stage(self, box: KubernetesSandbox, workspace: Path,
                     mounts: Sequence[tuple[Path, str]]) -> None:
        """Fill the pod's volumes through its init container, then let it end."""
        trees = [(workspace, "ws"), *((host, f"m{i}") for i, (host, _) in enumerate(mounts))]
        packed = await asyncio.to_thread(pack_in, trees)
        try:
            size = packed.seek(0, os.SEEK_END)
            packed.seek(0)
            script = (f'head -c "$0" | tar -x -C {STAGE} -f - && touch {READY}')
            code, _, err = await box.run(["sh", "-c", script, str(size)], _read(packed),
                                         timeout=600, container=STAGE_CONTAINER)
        finally:
            packed.close()
        if code != 0:
            raise SandboxError(f"could not copy the work tree into sandbox pod {box.name}: "
                               f"{err.decode(errors='replace').strip()}")

    async def _check_isolation(self, box: KubernetesSandbox) -> None:
        """Once per backend: the pod, denied all egress, must not reach the proxy."""
        if self.isolation_checked:
            return
        code, out, _ = await box.run(["bash", "-c", PROBE, self.proxy_host,
                                      str(box.proxy.port)], timeout=30)
        if b"reachable" in out:
            raise SandboxError(
                "a sandbox pod reached the worker while its NetworkPolicy denies all egress: "
                "this cluster does not enforce NetworkPolicies (its network plugin must, e.g. "
                "Calico or Cilium), so sandboxes would have the network")
        self.isolation_checked = True

    async def open_egress(self, box: KubernetesSandbox, open_: bool) -> None:
        """Let the pod reach its proxy (or nothing again)."""
        rules = egress_rules((self.proxy_host, box.proxy.port) if open_ else None)
        await self.cluster.call("PATCH", "networkpolicies", box.name,
                                body={"spec": {"egress": rules}}, patch=True)

    async def remove(self, name: str) -> None:
        """Delete a sandbox pod (at once) and its policy; either may be gone already."""
        await self.cluster.call("DELETE", "pods", name, missing_ok=True,
                                params={"gracePeriodSeconds": "0"})
        await self.cluster.call("DELETE", "networkpolicies", name, missing_ok=True)

    async def cleanup_orphans(self, held: LeaseCheck | None = None) -> list[str]:
        """Remove this deployment's sandbox pods (and policies) nobody wants any more: this
        process's that it no longer tracks, a dead worker process's on this host, those
        whose job's lease the worker that started them no longer holds, and ended pods."""
        selector = {"labelSelector": f"{LABEL}=1,handoff.deployment={self.deployment or 'none'}"}
        removed: list[str] = []
        for kind in ("pods", "networkpolicies"):
            listing = await self.cluster.call("GET", kind, params=selector)
            for item in listing.get("items") or []:
                name = item["metadata"]["name"]
                if name in removed or not await self._orphan(item, held):
                    continue
                await self.remove(name)
                removed.append(name)
        return removed

    async def _orphan(self, item: dict[str, Any], held: LeaseCheck | None) -> bool:
        meta = item["metadata"]
        name, labels, notes = meta["name"], meta.get("labels") or {}, meta.get("annotations") or {}
        if name in self.live:
            return False
        if labels.get("handoff.process") == PROCESS_ID:
            return True
        if (item.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            return True
        pid = notes.get("handoff.pid", "")
        if notes.get("handoff.host") == self.host and pid.isdigit() and not _alive(int(pid)):
            return True
        if held is not None and notes.get("handoff.owner"):
            return not await held(notes.get("handoff.job", ""), notes["handoff.owner"])
        return False


def _image_id(status: dict[str, Any]) -> str:
    """The image the sandbox container runs, as its node resolved it ("" if not said)."""
    for state in status.get("containerStatuses") or []:
        if state.get("name") == SANDBOX_CONTAINER:
            return str(state.get("imageID") or "")
    return ""


def _why(status: dict[str, Any]) -> str:
    """What the pod's status says about why it is not running."""
    parts = [status.get("reason", ""), status.get("message", "")]
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False" and condition.get("message"):
            parts.append(condition["message"])
    for key in ("initContainerStatuses", "containerStatuses"):
        for state in status.get(key) or []:
            for what in (state.get("state") or {}).values():
                parts += [what.get("reason", ""), what.get("message", "")]
    return "; ".join(p for p in parts if p) or f"phase {status.get('phase', 'unknown')}"


async def _stop(task: asyncio.Future[tuple[str, str] | None]) -> tuple[str, str] | None:
    """The watcher's finding, if it made one; else it is cancelled."""
    if task.done() and not task.cancelled():
        return None if task.exception() else task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, SandboxError, TimeoutError):
        await task
    return None


async def _read(data: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(data.read, 1 << 20):
        yield chunk


def _size_mb(path: Path) -> int:
    """Room for a copy of ``path``: its size, rounded up, plus some."""
    return tree_size(path) // (1 << 20) + 64


def _own_address() -> str:
    """The address this host's name resolves to (a pod's own IP, in a cluster)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


__all__ = ["KubernetesBackend", "KubernetesSandbox"]
