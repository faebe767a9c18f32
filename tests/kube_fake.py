"""A Kubernetes API server and kubelet on 127.0.0.1, for the kubernetes sandbox backend's tests.

It answers the calls the backend makes as a real API server does (paths, status codes,
``Status`` objects, lists, merge patches, bearer tokens) and records every request for the
tests to inspect. Created pods and policies are checked against the Kubernetes OpenAPI
schemas (kubernetes-validate); an invalid one is refused with 422 as the real server would.

The "kubelet" runs each container's command and each exec for real, in bubblewrap: the pod's
volumes are folders bound at their mount paths (read-only where the pod says so), as uid 1000,
in fresh namespaces. Exec speaks the websocket channel protocol (v5.channel.k8s.io or v4).
NetworkPolicies are enforced coarsely: a pod selected by a policy with no egress rule gets no
network; otherwise (a rule, or no policy: Kubernetes' default) it shares this host's. What it
does not do: scheduling, images (the host's /usr is every image; ``tools`` adds a Python
installation for a job's tests), resource limits, the policies' addresses and ports, watches,
and any API call the backend does not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

VERSION = "1.33"
TOKEN = "fake-cluster-token"
USER = "system:serviceaccount:handoff:handoff-worker"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc")
STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
CHUNK = 32 * 1024


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """A ``Status`` as the API server sends with an error."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "reason": reason,
                            "code": code}
    if details is not None:
        body["details"] = details
    return body


def failure(code: int, reason: str, message: str, **details: Any) -> JSONResponse:
    return JSONResponse(status(code, reason, message, details or None), status_code=code)


def not_found(kind: str, name: str) -> JSONResponse:
    return failure(404, "NotFound", f'{kind} "{name}" not found', name=name, kind=kind)


@dataclass
class Recorded:
    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    status: int = 0
    response: Any = None  # the JSON answered


@dataclass
class Fault:
    method: str
    path: str  # a regular expression searched in the request path
    code: int
    times: int = 1


@dataclass
class FakePod:
    obj: dict[str, Any]
    volumes: dict[str, Path]
    running: set[str] = field(default_factory=set)
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def validate(obj: dict[str, Any]) -> str | None:
    """Why ``obj`` does not match its kind's OpenAPI schema, or None."""
    try:
        kubernetes_validate.validate(obj, VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    return None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as ``application/merge-patch+json`` is applied."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selected(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors (``a=b,c=d``), the only kind the backend sends."""
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeCluster:
    """The API server and kubelet; ``await start()``, then point a kubeconfig at it."""

    def __init__(self, enforce_policies: bool = True,
                 protocols: tuple[str, ...] = ("v5.channel.k8s.io", "v4.channel.k8s.io"),
                 bwrap: str | None = None, tools: str = "") -> None:
        self.enforce_policies, self.protocols = enforce_policies, protocols
        self.tools = tools  # a host prefix (a Python's) whose bin/ is first on the image's PATH
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted_pods: list[dict[str, Any]] = []  # as they were when deleted
        self.builds: dict[str, int] = {}  # image reference: how often ``push`` rebuilt it
        self.version = 1000
        self.root = Path(tempfile.mkdtemp(prefix="handoff-fake-k8s-"))
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.port = 0
        self.app = Starlette(routes=[
            Route("/version", self.get_version),
            Route("/version/", self.get_version),
            Route("/api/v1/namespaces/{ns}/pods", self.pods_collection, methods=["GET", "POST"]),
            Route("/api/v1/namespaces/{ns}/pods/{name}", self.pod_item,
                  methods=["GET", "DELETE", "PATCH"]),
            WebSocketRoute("/api/v1/namespaces/{ns}/pods/{name}/exec", self.exec),
            Route("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
                  self.policies_collection, methods=["GET", "POST"]),
            Route("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
                  self.policy_item, methods=["GET", "DELETE", "PATCH"]),
        ])

    # -- serving ---------------------------------------------------------------------------

    async def start(self, ports: range = range(47200, 47210)) -> None:
        for port in ports:
            config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning",
                                    lifespan="off", ws="websockets-sansio")
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if server.started:
                self.server, self.task, self.port = server, task, port
                return
            with contextlib.suppress(BaseException):
                await task
        raise RuntimeError("no free port for the fake API server")

    async def stop(self) -> None:
        for pod in list(self.pods.values()):
            await self._kill(pod)
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
        shutil.rmtree(self.root, ignore_errors=True)

    def kubeconfig(self, path: Path, namespace: str = "handoff-sandboxes") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "fake", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": namespace}}]}))
        return path

    def push(self, image: str) -> None:
        """Push another build of ``image`` under the same reference: its digest changes."""
        self.builds[image] = self.builds.get(image, 0) + 1

    def image_id(self, image: str) -> str:
        """What a node reports a running container's image as: the digest of the build the
        reference names now."""
        digest = hashlib.sha256(f"{image}#{self.builds.get(image, 0)}".encode()).hexdigest()
        return f"docker.io/library/{image.partition(':')[0]}@sha256:{digest}"

    def fail(self, method: str, path: str, code: int, times: int = 1) -> None:
        """The next ``times`` requests matching ``method`` and ``path`` get ``code``."""
        self.faults.append(Fault(method, path, code, times))

    def sent(self, method: str, pattern: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    async def _admit(self, request: Request) -> tuple[Recorded, JSONResponse | None]:
        """Record the request; answer 401 or an injected fault before the handler runs."""
        raw = await request.body()
        body = json.loads(raw) if raw else None
        record = Recorded(request.method, request.url.path,
                          list(request.query_params.multi_items()), body)
        self.requests.append(record)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return record, failure(401, "Unauthorized", "Unauthorized")
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and \
                    re.search(fault.path, request.url.path):
                fault.times -= 1
                return record, self._fault(fault.code, request)
        return record, None

    def _fault(self, code: int, request: Request) -> JSONResponse:
        parts = request.url.path.rstrip("/").split("/")
        ns = parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""
        kind = parts[-1] if parts[-2] == ns else parts[-2]
        name = "" if parts[-2] == ns else parts[-1]
        verb = {"POST": "create", "GET": "get" if name else "list", "DELETE": "delete",
                "PATCH": "patch"}[request.method]
        group = "networking.k8s.io" if "networking" in request.url.path else ""
        if code == 403:
            what = f'{kind} "{name}"' if name else kind
            return failure(403, "Forbidden",
                           f'{what} is forbidden: User "{USER}" cannot {verb} resource "{kind}" '
                           f'in API group "{group}" in the namespace "{ns}"',
                           **({"name": name} if name else {}), kind=kind)
        if code == 404:
            return not_found(kind, name)
        if code == 409:
            return failure(409, "AlreadyExists", f'{kind} "{name}" already exists', name=name,
                           kind=kind)
        return failure(code, "InternalError", "Internal error occurred: injected by the test")

    def _respond(self, record: Recorded, response: JSONResponse) -> JSONResponse:
        record.status = response.status_code
        record.response = json.loads(bytes(response.body))
        return response

    async def get_version(self, request: Request) -> JSONResponse:
        record, refused = await self._admit(request)
        major, minor = VERSION.split(".")
        return self._respond(record, refused or JSONResponse({
            "major": major, "minor": minor, "gitVersion": f"v{VERSION}.0",
            "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2025-05-15T00:00:00Z",
            "goVersion": "go1.24.2", "compiler": "gc", "platform": "linux/amd64"}))

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.version += 1
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta["resourceVersion"] = str(self.version)

    # -- pods ------------------------------------------------------------------------------

    async def pods_collection(self, request: Request) -> JSONResponse:
        record, refused = await self._admit(request)
        ns = request.path_params["ns"]
        if refused:
            return self._respond(record, refused)
        if request.method == "GET":
            selector = request.query_params.get("labelSelector", "")
            items = [p.obj for (n, _), p in self.pods.items()
                     if n == ns and selected(selector, p.obj["metadata"].get("labels") or {})]
            return self._respond(record, JSONResponse({
                "kind": "PodList", "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.version)}, "items": items}))
        obj = record.body
        name = obj["metadata"]["name"]
        if (why := validate(obj)) is not None:
            return self._respond(record, failure(422, "Invalid", f'Pod "{name}" is invalid: {why}',
                                                 name=name, kind="Pod"))
        if (ns, name) in self.pods:
            return self._respond(record, failure(409, "AlreadyExists",
                                                 f'pods "{name}" already exists', name=name,
                                                 kind="pods"))
        obj = copy.deepcopy(obj)
        obj["metadata"]["namespace"] = ns
        self._stamp(obj)
        obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        pod = FakePod(obj, {v["name"]: self._volume() for v in obj["spec"]["volumes"]})
        self.pods[(ns, name)] = pod
        pod.tasks.append(asyncio.create_task(self._kubelet(pod)))
        return self._respond(record, JSONResponse(obj, status_code=201))

    async def pod_item(self, request: Request) -> JSONResponse:
        record, refused = await self._admit(request)
        key = (request.path_params["ns"], request.path_params["name"])
        if refused:
            return self._respond(record, refused)
        pod = self.pods.get(key)
        if pod is None:
            return self._respond(record, not_found("pods", key[1]))
        if request.method == "GET":
            return self._respond(record, JSONResponse(pod.obj))
        if request.method == "DELETE":
            del self.pods[key]
            await self._kill(pod)
            pod.obj["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            self.deleted_pods.append(pod.obj)
            return self._respond(record, JSONResponse(pod.obj))
        return self._respond(record, failure(405, "MethodNotAllowed", "not in the fake"))

    def _volume(self) -> Path:
        path = Path(tempfile.mkdtemp(dir=self.root))
        path.chmod(0o777)  # as an emptyDir
        return path

    # -- the kubelet -----------------------------------------------------------------------

    def _set_state(self, pod: FakePod, key: str, name: str, state: dict[str, Any]) -> None:
        spec = pod.obj["spec"]
        containers = spec.get("initContainers" if key == "initContainerStatuses"
                              else "containers") or []
        statuses = pod.obj["status"].setdefault(key, [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
             "restartCount": 0, "started": False,
             "state": {"waiting": {"reason": "PodInitializing"}}} for c in containers])
        for entry in statuses:
            if entry["name"] == name:
                entry["state"] = state
                entry["started"] = "running" in state
                if "running" in state:
                    entry["imageID"] = self.image_id(entry["image"])
                entry["ready"] = "running" in state and key == "containerStatuses"
        self.version += 1
        pod.obj["metadata"]["resourceVersion"] = str(self.version)

    async def _kubelet(self, pod: FakePod) -> None:
        """Run the init containers one by one, then mark the containers running."""
        status = pod.obj["status"]
        status.update(hostIP="127.0.0.1", podIP="127.0.0.1", podIPs=[{"ip": "127.0.0.1"}],
                      startTime=now(), conditions=[
                          {"type": "PodScheduled", "status": "True",
                           "lastTransitionTime": now()}])
        for key, containers in (("initContainerStatuses", "initContainers"),
                                ("containerStatuses", "containers")):
            for c in pod.obj["spec"].get(containers) or []:
                self._set_state(pod, key, c["name"], {"waiting": {"reason": "PodInitializing"}})
        deadline = pod.obj["spec"].get("activeDeadlineSeconds")
        if deadline:
            pod.tasks.append(asyncio.create_task(self._deadline(pod, deadline)))
        for container in pod.obj["spec"].get("initContainers") or []:
            self._set_state(pod, "initContainerStatuses", container["name"],
                            {"running": {"startedAt": now()}})
            pod.running.add(container["name"])
            proc = await self._spawn(pod, container, container["command"], stdin=False)
            pod.procs.append(proc)
            code = await proc.wait()
            pod.running.discard(container["name"])
            reason = "Completed" if code == 0 else "Error"
            self._set_state(pod, "initContainerStatuses", container["name"], {"terminated": {
                "exitCode": code, "reason": reason, "startedAt": now(), "finishedAt": now()}})
            if code != 0:
                status.update(phase="Failed")
                return
        for container in pod.obj["spec"]["containers"]:
            self._set_state(pod, "containerStatuses", container["name"],
                            {"running": {"startedAt": now()}})
            pod.running.add(container["name"])
        status.update(phase="Running")
        status["conditions"] += [{"type": t, "status": "True", "lastTransitionTime": now()}
                                 for t in ("Initialized", "Ready", "ContainersReady")]

    async def _deadline(self, pod: FakePod, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._kill(pod, keep_tasks=True)
        pod.obj["status"].update(phase="Failed", reason="DeadlineExceeded",
                                 message="Pod was active on the node longer than the "
                                 "specified deadline")

    async def _kill(self, pod: FakePod, keep_tasks: bool = False) -> None:
        pod.running.clear()
        for proc in pod.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        if not keep_tasks:
            for task in pod.tasks:
                task.cancel()

    def network_shared(self, pod: FakePod) -> bool:
        """Whether the pod's commands have the network, as a policy-enforcing plugin says."""
        if not self.enforce_policies:
            return True
        ns, labels = pod.obj["metadata"]["namespace"], pod.obj["metadata"]["labels"]
        egress_policies = [
            p for (n, _), p in self.policies.items()
            if n == ns and "Egress" in p["spec"].get("policyTypes", [])
            and all(labels.get(k) == v for k, v in
                    (p["spec"]["podSelector"].get("matchLabels") or {}).items())]
        if not egress_policies:
            return True  # not selected by any policy: Kubernetes allows everything
        return any(p["spec"].get("egress") for p in egress_policies)

    async def _spawn(self, pod: FakePod, container: dict[str, Any], argv: list[str],
                     stdin: bool) -> asyncio.subprocess.Process:
        """A process in the container: its volumes at their mount paths, as its user."""
        spec, ctx = pod.obj["spec"], container.get("securityContext") or {}
        uid = ctx.get("runAsUser", spec.get("securityContext", {}).get("runAsUser", 0))
        args = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session",
                "--unshare-user", "--uid", str(uid), "--gid", str(uid),
                "--proc", "/proc", "--dev", "/dev"]
        if self.network_shared(pod):
            args.append("--share-net")
        for path in SYSTEM_DIRS:
            if os.path.exists(path):
                args += ["--ro-bind", path, path]
        for mount in container.get("volumeMounts") or []:
            flag = "--ro-bind" if mount.get("readOnly") else "--bind"
            args += [flag, str(pod.volumes[mount["name"]]), mount["mountPath"]]
        if self.tools:
            args += ["--ro-bind", self.tools, self.tools]
        args += ["--clearenv"]
        for env in container.get("env") or []:
            value = env["value"]
            if env["name"] == "PATH" and self.tools:
                value = f"{self.tools}/bin:{value}"
            args += ["--setenv", env["name"], value]
        args += ["--chdir", container.get("workingDir", "/"), *argv]
        return await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL)

    # -- exec ------------------------------------------------------------------------------

    async def exec(self, ws: WebSocket) -> None:
        query = list(ws.query_params.multi_items())
        ns, name = ws.path_params["ns"], ws.path_params["name"]
        record = Recorded("GET", ws.url.path, query, None)
        self.requests.append(record)
        refusal = self._exec_refusal(ws, ns, name)
        if refusal is not None:
            self._respond(record, refusal)
            await ws.send_denial_response(refusal)
            return
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
        protocol = next((p for p in offered if p in self.protocols), None)
        if protocol is None:
            record.status = 400
            await ws.send_denial_response(failure(400, "BadRequest",
                                                  "no supported subprotocol offered"))
            return
        record.status = 101
        await ws.accept(subprotocol=protocol)
        pod = self.pods[(ns, name)]
        params = dict(query)
        container = next(c for c in [*(pod.obj["spec"].get("initContainers") or []),
                                     *pod.obj["spec"]["containers"]]
                         if c["name"] == params["container"])
        command = [v for k, v in query if k == "command"]
        proc = await self._spawn(pod, container, command, stdin=True)
        pod.procs.append(proc)
        for channel in (STDOUT, STDERR, ERROR):  # each channel opens with an empty message
            await ws.send_bytes(bytes([channel]))
        await self._relay(ws, proc, protocol, params.get("stdin") == "true")

    def _exec_refusal(self, ws: WebSocket, ns: str, name: str) -> JSONResponse | None:
        if ws.headers.get("authorization") != f"Bearer {TOKEN}":
            return failure(401, "Unauthorized", "Unauthorized")
        for fault in self.faults:
            if fault.times > 0 and fault.method == "GET" and re.search(fault.path, ws.url.path):
                fault.times -= 1
                return failure(fault.code, "Forbidden" if fault.code == 403 else "InternalError",
                               f'pods "{name}" is forbidden: User "{USER}" cannot create '
                               f'resource "pods/exec" in API group "" in the namespace "{ns}"'
                               if fault.code == 403 else "injected by the test")
        pod = self.pods.get((ns, name))
        if pod is None:
            return not_found("pods", name)
        container = ws.query_params.get("container", "")
        if container not in pod.running:
            return failure(400, "BadRequest",
                           f'container {container} is not valid for pod {name}')
        return None

    async def _relay(self, ws: WebSocket, proc: asyncio.subprocess.Process, protocol: str,
                     stdin_open: bool) -> None:
        assert proc.stdin and proc.stdout and proc.stderr

        async def pump(stream: asyncio.StreamReader, channel: int) -> None:
            while chunk := await stream.read(CHUNK):
                await ws.send_bytes(bytes([channel]) + chunk)

        async def feed() -> None:
            assert proc.stdin
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                while True:
                    message = await ws.receive_bytes()
                    if message[:1] == bytes([STDIN]) and stdin_open:
                        proc.stdin.write(message[1:])
                        await proc.stdin.drain()
                    elif message[:2] == bytes([CLOSE, STDIN]) and protocol.startswith("v5"):
                        proc.stdin.close()

        feeder = asyncio.create_task(feed())
        try:
            await asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
            code = await proc.wait()
            await ws.send_bytes(bytes([ERROR]) + json.dumps(exec_status(code)).encode())
            await ws.close(1000)
        except (WebSocketDisconnect, RuntimeError, OSError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        finally:
            feeder.cancel()

    # -- network policies ------------------------------------------------------------------

    async def policies_collection(self, request: Request) -> JSONResponse:
        record, refused = await self._admit(request)
        ns = request.path_params["ns"]
        if refused:
            return self._respond(record, refused)
        if request.method == "GET":
            selector = request.query_params.get("labelSelector", "")
            items = [p for (n, _), p in self.policies.items()
                     if n == ns and selected(selector, p["metadata"].get("labels") or {})]
            return self._respond(record, JSONResponse({
                "kind": "NetworkPolicyList", "apiVersion": "networking.k8s.io/v1",
                "metadata": {"resourceVersion": str(self.version)}, "items": items}))
        obj = copy.deepcopy(record.body)
        name = obj["metadata"]["name"]
        if (why := validate(obj)) is not None:
            return self._respond(record, failure(
                422, "Invalid", f'NetworkPolicy.networking.k8s.io "{name}" is invalid: {why}',
                name=name, group="networking.k8s.io", kind="NetworkPolicy"))
        if (ns, name) in self.policies:
            return self._respond(record, failure(
                409, "AlreadyExists", f'networkpolicies.networking.k8s.io "{name}" already '
                "exists", name=name, group="networking.k8s.io", kind="networkpolicies"))
        obj["metadata"]["namespace"] = ns
        obj["metadata"]["generation"] = 1
        self._stamp(obj)
        self.policies[(ns, name)] = obj
        return self._respond(record, JSONResponse(obj, status_code=201))

    async def policy_item(self, request: Request) -> JSONResponse:
        record, refused = await self._admit(request)
        key = (request.path_params["ns"], request.path_params["name"])
        if refused:
            return self._respond(record, refused)
        obj = self.policies.get(key)
        if obj is None:
            return self._respond(record, failure(
                404, "NotFound", f'networkpolicies.networking.k8s.io "{key[1]}" not found',
                name=key[1], group="networking.k8s.io", kind="networkpolicies"))
        if request.method == "GET":
            return self._respond(record, JSONResponse(obj))
        if request.method == "DELETE":
            del self.policies[key]
            return self._respond(record, JSONResponse({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": key[1], "group": "networking.k8s.io",
                            "kind": "networkpolicies", "uid": obj["metadata"]["uid"]}}))
        if request.headers.get("content-type") != "application/merge-patch+json":
            return self._respond(record, failure(415, "UnsupportedMediaType",
                                                 "the fake takes merge patches only"))
        patched = merge_patch(obj, record.body)
        if (why := validate(patched)) is not None:
            return self._respond(record, failure(422, "Invalid", why))
        patched["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        self._stamp(patched)
        self.policies[key] = patched
        return self._respond(record, JSONResponse(patched))


def exec_status(code: int) -> dict[str, Any]:
    """The ``Status`` the API server ends an exec with."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    code = 128 - code if code < 0 else code  # killed by a signal
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[...], exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
