"""The kubernetes sandbox backend against a recorded API server (``kube_fake``): what it asks
the API server for, and what its sandboxes do, with commands run for real in bubblewrap.

No real cluster runs here (none installs from the package registries this project reaches), so
the API server's answers are written from its documented behaviour, and checked against the
Kubernetes OpenAPI schemas (kubernetes-validate) where a schema exists.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import stat
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kube_fake import VERSION, FakeCluster

from bot.config import Settings
from bot.executor.sandbox import SandboxError, make_backend
from bot.executor.sandbox.base import PROCESS_ID, Limits
from bot.executor.sandbox.kubernetes import KubernetesBackend, KubernetesSandbox

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="the fake kubelet runs containers with bubblewrap")

NAMESPACE = "handoff-sandboxes"
LIMITS = Limits(memory_mb=256, cpus=1.5, pids=64, timeout=20, output_cap=4096, workspace_mb=8)
PROXY_PORTS = range(47250, 47300)
TARGET_PORT = 47220  # a web server the egress tests reach through the proxy


def make(**overrides: Any) -> KubernetesBackend:
    options: dict[str, Any] = dict(image="handoff-sandbox:test", limits=LIMITS,
                                   namespace=NAMESPACE, proxy_host="127.0.0.1",
                                   proxy_ports=PROXY_PORTS, deadline=900, deployment="dep1",
                                   allow_private=True)
    return KubernetesBackend(**{**options, **overrides})


async def started(**options: Any) -> AsyncIterator[FakeCluster]:
    cluster = FakeCluster(**options)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeCluster]:
    async for fake in started():
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        yield fake


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "a.txt").write_text("hello\n")
    (ws / "old.txt").write_text("old\n")
    (ws / "src" / "run.sh").write_text("echo ran\n")
    (ws / "src" / "run.sh").chmod(0o755)
    (ws / "link").symlink_to("a.txt")
    return ws


@pytest.fixture
async def box(cluster: FakeCluster, workspace: Path) -> AsyncIterator[KubernetesSandbox]:
    async with make() as backend:
        sandbox = await backend.start(12, workspace, owner="worker-a")
        try:
            yield sandbox
        finally:
            await sandbox.close()


def created(cluster: FakeCluster, kind: str) -> dict[str, Any]:
    [request] = cluster.sent("POST", f"/{kind}$")
    body: dict[str, Any] = request.body
    return body


async def test_pod_asks_for_no_privilege_and_the_limits(cluster: FakeCluster,
                                                        box: KubernetesSandbox) -> None:
    pod = created(cluster, "pods")
    assert kubernetes_validate.validate(pod, VERSION, strict=True)
    spec = pod["spec"]
    assert spec["activeDeadlineSeconds"] == 900 and spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert not (spec["hostNetwork"] or spec["hostPID"] or spec["hostIPC"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert all("emptyDir" in v for v in spec["volumes"])  # no host paths
    for container in spec["initContainers"] + spec["containers"]:
        ctx = container["securityContext"]
        assert ctx["privileged"] is False and ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True and ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 1000
        assert container["resources"]["limits"]["cpu"] == "1.5"
        assert container["resources"]["limits"]["memory"] == "256Mi"
    [sandbox] = spec["containers"]
    assert sandbox["image"] == "handoff-sandbox:test"
    assert {"name": "ws", "mountPath": "/workspace"} in sandbox["volumeMounts"]
    labels, notes = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert labels == {"handoff.sandbox": "1", "handoff.job": "12", "handoff.deployment": "dep1",
                      "handoff.process": PROCESS_ID, "handoff.pod": box.name}
    assert notes["handoff.owner"] == "worker-a" and notes["handoff.job"] == "12"
    assert notes["handoff.pid"] == str(os.getpid())


async def test_the_policy_comes_first_and_denies_everything(cluster: FakeCluster,
                                                            box: KubernetesSandbox) -> None:
    posts = [r.path.rsplit("/", 1)[1] for r in cluster.requests if r.method == "POST"]
    assert posts == ["networkpolicies", "pods"]
    policy = created(cluster, "networkpolicies")
    assert kubernetes_validate.validate(policy, VERSION, strict=True)
    assert policy["spec"] == {"podSelector": {"matchLabels": {"handoff.pod": box.name}},
                              "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    result = await box.exec("python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
                            f"{cluster.port}), 2)\"")
    assert result.exit_code != 0  # not even the API server


async def test_commands_run_in_the_work_tree_and_changes_come_back(
        box: KubernetesSandbox, workspace: Path) -> None:
    result = await box.exec("cat a.txt && src/run.sh && id -u && pwd")
    assert result.stdout == "hello\nran\n1000\n/workspace\n" and result.ok
    result = await box.exec("echo new > b.txt && rm old.txt && mkdir -p d/e && echo f > d/e/f "
                            "&& ln -s d/e/f l2 && chmod +x b.txt && echo more >> a.txt "
                            "&& rm link && mkdir link && mv src moved")
    assert result.ok, result.stderr
    assert (workspace / "b.txt").read_text() == "new\n"
    assert os.stat(workspace / "b.txt").st_mode & stat.S_IXUSR
    assert not (workspace / "old.txt").exists() and not (workspace / "src").exists()
    assert (workspace / "d/e/f").read_text() == "f\n"
    assert os.readlink(workspace / "l2") == "d/e/f"
    assert (workspace / "a.txt").read_text() == "hello\nmore\n"
    assert (workspace / "link").is_dir() and not (workspace / "link").is_symlink()
    assert (workspace / "moved/run.sh").read_text() == "echo ran\n"


async def test_exit_codes_stdin_environment_and_output_cap(cluster: FakeCluster,
                                                           box: KubernetesSandbox) -> None:
    assert (await box.exec("exit 3")).exit_code == 3
    result = await box.exec("cat; printf '%s' \"$SECRET_KEY\"", stdin=b"from stdin\n",
                            env={"SECRET_KEY": "s3cr3t 'quoted' $x"})
    assert result.stdout == "from stdin\ns3cr3t 'quoted' $x"
    urls = [json.dumps(r.query) for r in cluster.requests]
    assert not any("s3cr3t" in u or "from stdin" in u for u in urls)  # never in a URL
    result = await box.exec("head -c 100000 /dev/zero | tr '\\0' x")
    assert result.truncated and len(result.stdout) == 4096 and result.cut_bytes == 100000 - 4096
    assert (await box.exec("echo $HOME; touch /etc/x")).stdout == "/tmp\n"


async def test_a_command_past_its_time_is_killed(box: KubernetesSandbox) -> None:
    result = await box.exec("sleep 30", timeout=1)
    assert result.timed_out and result.exit_code == 137 and result.duration < 10


async def test_mounts_are_read_only(cluster: FakeCluster, workspace: Path, tmp_path: Path
                                    ) -> None:
    objects = tmp_path / "objects"
    (objects / "pack").mkdir(parents=True)
    (objects / "pack" / "x.pack").write_bytes(b"PACK")
    async with make() as backend:
        box = await backend.start("12-baseline", workspace,
                                  mounts=[(objects, "/opt/handoff/objects")])
        try:
            result = await box.exec("cat /opt/handoff/objects/pack/x.pack; "
                                    "touch /opt/handoff/objects/new")
            assert result.stdout == "PACK" and "Read-only file system" in result.stderr
        finally:
            await box.close()
    mounts = created(cluster, "pods")["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "m0", "mountPath": "/opt/handoff/objects", "readOnly": True} in mounts


async def test_the_disk_limit_stops_the_sandbox(box: KubernetesSandbox, workspace: Path) -> None:
    result = await box.exec("head -c 9000000 /dev/zero > big")
    assert result.limit == "disk-limit" and "8 MB" in result.limit_detail
    assert box.limit_hit is result and await box.exec("echo again") is result
    assert not (workspace / "big").exists()  # never copied to the host


async def test_egress_reaches_only_allowed_hosts_through_the_proxy(
        cluster: FakeCluster, workspace: Path) -> None:
    fetch = ("python3 -c \"import urllib.request as u; print(u.urlopen("
             f"'http://{{host}}:{TARGET_PORT}/', timeout=5).read().decode(), end='')\"")
    with web_server(TARGET_PORT):
        async with make() as backend:
            box = await backend.start(13, workspace, egress=[f"127.0.0.1:{TARGET_PORT}"])
            try:
                reached = await box.exec(fetch.format(host="127.0.0.1"))
                assert reached.stdout == "hello from the web\n", reached.stderr
                refused = await box.exec(fetch.format(host="localhost"))
                assert refused.exit_code != 0 and \
                    box.egress_denied == [f"localhost:{TARGET_PORT}"]
                [opened] = cluster.sent("PATCH", "/networkpolicies/")
                assert opened.body == {"spec": {"egress": [{
                    "to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}],
                    "ports": [{"protocol": "TCP", "port": box.proxy.port}]}]}}
                await box.set_egress([])
                assert cluster.sent("PATCH", "/networkpolicies/")[-1].body == \
                    {"spec": {"egress": []}}
                closed = await box.exec(fetch.format(host="127.0.0.1"))
                assert closed.exit_code != 0
            finally:
                await box.close()


async def test_a_cluster_that_does_not_enforce_policies_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace: Path) -> None:
    async for cluster in started(enforce_policies=False):
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        async with make() as backend:
            with pytest.raises(SandboxError, match="does not enforce NetworkPolicies"):
                await backend.start(14, workspace)
            assert not cluster.pods and not cluster.policies
            assert not {n for n in backend.live if n.startswith("handoff-job-14-")}


async def test_exec_over_v4_passes_stdin_without_closing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace: Path) -> None:
    async for cluster in started(protocols=("v4.channel.k8s.io",)):
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        async with make() as backend:
            box = await backend.start(15, workspace)
            try:
                result = await box.exec("wc -c", stdin=b"x" * 100_000)
                assert result.stdout.strip() == "100000"
            finally:
                await box.close()


async def test_api_errors_become_sandbox_errors_and_leave_nothing(
        cluster: FakeCluster, workspace: Path) -> None:
    async with make() as backend:
        cluster.fail("POST", "/pods$", 403, times=99)  # RBAC says no every time (kr8s asks again)
        with pytest.raises(SandboxError, match='403.*cannot create resource "pods"'):
            await backend.start(16, workspace)
        cluster.faults.clear()
        assert not cluster.pods and not cluster.policies
        assert not {n for n in backend.live if n.startswith("handoff-job-16-")}
        cluster.fail("POST", "/networkpolicies$", 409)
        with pytest.raises(SandboxError, match="409.*already exists"):
            await backend.start(16, workspace)
        cluster.fail("GET", "/exec$", 403, times=99)
        with pytest.raises(SandboxError, match="exec refused: 403"):
            await backend.start(16, workspace)
        assert not cluster.pods and not cluster.policies
        statuses = [r.response for r in cluster.requests if r.status >= 400]
        assert statuses and all(s["kind"] == "Status" for s in statuses)


async def test_closing_the_backend_closes_its_connections(cluster: FakeCluster,
                                                         workspace: Path) -> None:
    """The worker closes its backend when it stops: the API server sees no connection left
    open (kr8s never closes its own client)."""
    assert cluster.server is not None
    open_connections = cluster.server.server_state.connections
    async with make() as backend:
        box = await backend.start(22, workspace)
        assert (await box.exec("true")).ok
        await box.close()
        assert open_connections  # kept alive between requests
    for _ in range(50):
        if not open_connections:
            break
        await asyncio.sleep(0.05)
    assert not open_connections


async def test_close_tolerates_a_pod_already_gone(cluster: FakeCluster,
                                                  box: KubernetesSandbox) -> None:
    cluster.pods.clear()
    await box.close()
    assert [r.status for r in cluster.sent("DELETE")] == [404, 200]
    assert box.name not in box.backend.live


async def test_a_pod_past_its_deadline_fails_the_command(cluster: FakeCluster,
                                                         workspace: Path) -> None:
    async with make(deadline=3) as backend:
        box = await backend.start(17, workspace)
        try:
            await asyncio.sleep(3.5)
            with pytest.raises(SandboxError, match="DeadlineExceeded"):
                await box.exec("true")
        finally:
            await box.close()


async def test_reaping_by_process_and_lease(cluster: FakeCluster, workspace: Path) -> None:
    async with make() as backend:
        mine = await backend.start(18, workspace, owner="w1")
        kept = await backend.start(19, workspace, owner="w1")
        backend.live.discard(mine.name)  # as if this process had lost track of it
        other = clone_pod(cluster, kept.name, "handoff-job-20-aaaaaa", owner="w2", job="20")
        ended = clone_pod(cluster, kept.name, "handoff-job-21-bbbbbb", owner="w3", job="21")
        cluster.pods[(NAMESPACE, ended)].obj["status"]["phase"] = "Failed"
        asked: list[tuple[str, str]] = []

        async def held(job: str, owner: str) -> bool:
            asked.append((job, owner))
            return owner == "w3"

        removed = await backend.cleanup_orphans(held)
        assert sorted(removed) == sorted([mine.name, other, ended])
        assert ("20", "w2") in asked
        assert set(cluster.pods) == {(NAMESPACE, kept.name)}
        selectors = {dict(r.query).get("labelSelector") for r in cluster.sent("GET", "s$")}
        assert selectors == {"handoff.sandbox=1,handoff.deployment=dep1"}
        for request in cluster.sent("GET", "s$"):
            schema = "podlist" if request.path.endswith("pods") else "networkpolicylist"
            assert_schema(request.response, schema)
        await kept.close()
        await mine.close()


async def test_a_job_runs_end_to_end_in_sandbox_pods(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Label to pull request through the whole stack, the sandboxes pods of the fake: the
    agent edits over exec, git in the pod finds the mirror's objects, the host commits what
    came back, and the baseline runs in a second pod."""
    from agent_fixtures import CALC_WITH_TESTS, FIX_SCRIPT

    from devkit.stack import stack

    async for cluster in started(tools=sys.prefix):
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        async with stack(tmp_path, FIX_SCRIPT, sandbox="kubernetes",
                         sandbox_image="handoff-sandbox:test", kubernetes_proxy_host="127.0.0.1",
                         kubernetes_proxy_ports="47250-47299", kubernetes_namespace=NAMESPACE,
                         egress_allow_private=True) as s:
            s.sim.add_repo("acme/calc", CALC_WITH_TESTS)
            job = await s.handed_over("acme/calc", "add() subtracts", "- [ ] add(2, 3) returns 5")
            assert job.state == "succeeded", job.reason
            [pr] = [i for i in s.sim.get_repo("acme/calc").issues.values() if i.pull]
            assert "fail — 1 failed" in pr.body and "pass — 1 passed" in pr.body
        pods = [r.body["metadata"]["labels"]["handoff.job"] for r in cluster.sent("POST", "/pods$")]
        assert sorted(pods) == [str(job.id), f"{job.id}-baseline"]
        assert not cluster.pods and not cluster.policies  # both closed


def test_make_backend_reads_the_kubernetes_settings() -> None:
    settings = Settings(sandbox="kubernetes", kubernetes_namespace="jobs",
                        kubernetes_proxy_ports="47250-47299", kubernetes_proxy_host="10.1.2.3",
                        kubernetes_runtime_class="gvisor", max_wall_seconds=100,
                        command_timeout=10, _env_file=None)  # type: ignore[call-arg]
    backend = make_backend(settings)
    assert isinstance(backend, KubernetesBackend)
    assert backend.cluster.namespace == "jobs" and backend.proxy_ports == PROXY_PORTS
    assert backend.proxy_host == "10.1.2.3" and backend.runtime_class == "gvisor"
    assert backend.deadline == 100 + 3 * 10 + 300 and len(backend.deployment) == 12


async def test_the_answers_replayed_match_the_api_schemas(cluster: FakeCluster,
                                                          box: KubernetesSandbox) -> None:
    await box.exec("true")
    cluster.fail("GET", "/pods/missing$", 404)
    await box.backend.remove("missing")
    kinds: dict[str, int] = {}
    for request in cluster.requests:
        body = request.response
        if not isinstance(body, dict) or "kind" not in body:
            continue
        kinds[body["kind"]] = kinds.get(body["kind"], 0) + 1
        if body["kind"] == "Status":
            assert_schema(body, "status")
        else:
            assert kubernetes_validate.validate(body, VERSION, strict=True)
    assert {"Pod", "NetworkPolicy", "Status"} <= set(kinds)


# -- helpers ---------------------------------------------------------------------------------


def assert_schema(body: dict[str, Any], name: str) -> None:
    """Check a body against one of kubernetes-validate's schemas by file name (``Status`` and
    lists have no kind/apiVersion pair its ``validate`` finds)."""
    import jsonschema
    import referencing
    from kubernetes_validate.utils import schema_contents

    folder = f"kubernetes-json-schema/v{VERSION}.0-local-strict"
    files = {"status": "status-meta-v1", "podlist": "podlist-v1",
             "networkpolicylist": "networkpolicylist-networking-v1"}
    schema = schema_contents(f"{folder}/{files[name]}.json", VERSION)
    registry = referencing.Registry().with_resources([
        ("_definitions.json", referencing.Resource.from_contents(
            schema_contents(f"{folder}/_definitions.json", VERSION)))])
    registry = referencing.Resource.from_contents(schema) @ registry
    jsonschema.Draft202012Validator(schema, registry=registry).validate(body)


def clone_pod(cluster: FakeCluster, source: str, name: str, owner: str, job: str) -> str:
    """A copy of a pod, as if another worker (another process, host and lease) made it."""
    import copy

    from kube_fake import FakePod

    original = cluster.pods[(NAMESPACE, source)]
    pod = FakePod(copy.deepcopy(original.obj), original.volumes, set(original.running))
    meta = pod.obj["metadata"]
    meta["name"] = name
    meta["labels"].update({"handoff.process": "0" * 12, "handoff.job": job, "handoff.pod": name})
    meta["annotations"].update({"handoff.owner": owner, "handoff.host": "elsewhere",
                                "handoff.job": job})
    cluster.pods[(NAMESPACE, name)] = pod
    return name


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        body = b"hello from the web\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class web_server:  # noqa: N801 (used as a context manager)
    def __init__(self, port: int) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hello)

    def __enter__(self) -> Iterator[None]:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return iter(())

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
