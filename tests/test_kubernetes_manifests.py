"""deploy/kubernetes/: valid against the Kubernetes OpenAPI schemas (kubernetes-validate ships
them), and saying what the README says: no privileged pod, the worker on the kubernetes
backend with a Role only for its sandboxes, PostgreSQL shared through HANDOFF_DATABASE_URL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.config import Settings
from bot.executor.sandbox.base import Limits
from bot.executor.sandbox.kube_spec import network_policy, pod_manifest

ROOT = Path(__file__).parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
OLDEST, NEWEST = "1.29", kubernetes_validate.latest_version()


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What breaks the "restricted" Pod Security Standard (the parts a manifest decides)."""
    pod_ctx = spec.get("securityContext") or {}
    found = [f"{key} is set" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    found += [f"volume {v['name']} is a hostPath" for v in spec.get("volumes", [])
              if "hostPath" in v]
    for c in spec.get("initContainers", []) + spec["containers"]:
        ctx = c.get("securityContext") or {}
        name = c["name"]
        if ctx.get("privileged"):
            found.append(f"{name} is privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name} may escalate privileges")
        if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
            found.append(f"{name} keeps capabilities")
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            found.append(f"{name} may run as root")
        seccomp = ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name} has no seccomp profile")
        if any("hostPort" in p for p in c.get("ports", [])):
            found.append(f"{name} uses a host port")
    return found


def test_there_are_manifests() -> None:
    assert MANIFESTS and len(documents()) >= 10


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_every_document_matches_the_openapi_schema(version: str) -> None:
    for doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")


def test_no_pod_is_privileged_and_all_meet_the_restricted_standard() -> None:
    workloads = [d for d in documents() if d["kind"] in ("Deployment", "StatefulSet")]
    assert {w["metadata"]["name"] for w in workloads} == {
        "handoff-web", "handoff-worker", "handoff-postgres"}
    for workload in workloads:
        assert restricted_violations(pod_spec(workload)) == [], workload["metadata"]["name"]
    for ns in (d for d in documents() if d["kind"] == "Namespace"):
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_sandbox_pod_the_backend_makes_meets_it_too() -> None:
    pod = pod_manifest("handoff-job-1-abcdef", "handoff-sandboxes", "img", Limits(),
                       {"handoff.sandbox": "1"}, {}, [("/opt/handoff/objects", 100)], 3600)
    assert restricted_violations(pod["spec"]) == []
    kubernetes_validate.validate(pod, NEWEST, strict=True)
    policy = network_policy("handoff-job-1-abcdef", "handoff-sandboxes", {}, {},
                            ("10.0.0.7", 40001))
    kubernetes_validate.validate(policy, NEWEST, strict=True)


def test_the_worker_runs_sandboxes_as_pods_with_a_role_only_for_them() -> None:
    worker = pod_spec(find("Deployment", "handoff-worker"))
    [container] = worker["containers"]
    variables = env(container)
    assert variables["HANDOFF_SANDBOX"] == "kubernetes"
    namespace = variables["HANDOFF_KUBERNETES_NAMESPACE"]
    assert variables["HANDOFF_KUBERNETES_PROXY_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    role = find("Role", "handoff-sandboxes")
    assert role["metadata"]["namespace"] == namespace
    assert {(tuple(r["apiGroups"]), tuple(r["resources"])) for r in role["rules"]} == {
        (("",), ("pods",)), (("",), ("pods/exec",)), (("networking.k8s.io",), ("networkpolicies",))}
    assert not any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") for d in documents())
    binding = find("RoleBinding", "handoff-worker")
    assert binding["roleRef"]["name"] == "handoff-sandboxes"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": worker["serviceAccountName"],
                                    "namespace": "handoff"}]
    web = pod_spec(find("Deployment", "handoff-web"))
    assert web["automountServiceAccountToken"] is False  # the web pods need no API access


def test_the_worker_takes_sandbox_traffic_only_on_the_proxy_ports() -> None:
    variables = env(pod_spec(find("Deployment", "handoff-worker"))["containers"][0])
    first, last = (int(p) for p in variables["HANDOFF_KUBERNETES_PROXY_PORTS"].split("-"))
    policy = find("NetworkPolicy", "handoff-worker")
    [from_sandboxes] = [rule for rule in policy["spec"]["ingress"]
                        if any("podSelector" in peer for peer in rule.get("from", []))]
    assert from_sandboxes["ports"] == [{"protocol": "TCP", "port": first, "endPort": last}]
    deny = find("NetworkPolicy", "default-deny")
    assert deny["metadata"]["namespace"] == variables["HANDOFF_KUBERNETES_NAMESPACE"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_metrics_are_scraped_from_the_monitoring_namespace_only() -> None:
    """/metrics has a port of its own (never the webhook's), which only the monitoring
    namespace may reach: no rule lets any pod in on it (audit 3, row 39)."""
    for name in ("handoff-web", "handoff-worker"):
        variables = env(pod_spec(find("Deployment", name))["containers"][0])
        port = int(variables["HANDOFF_METRICS_PORT"])
        assert port != int(variables.get("HANDOFF_PORT", "8000"))
        rules = [rule for rule in find("NetworkPolicy", name)["spec"]["ingress"]
                 if any(p["port"] == port for p in rule["ports"])]
        assert rules and all(rule.get("from") == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}] for rule in rules), rules


def test_web_and_workers_share_one_postgresql_through_database_url() -> None:
    service = find("Service", "handoff-postgres")
    port = service["spec"]["ports"][0]["port"]
    for name in ("handoff-web", "handoff-worker"):
        workload = find("Deployment", name)
        url = env(pod_spec(workload)["containers"][0])["HANDOFF_DATABASE_URL"]
        assert re.fullmatch(rf"postgresql\+asyncpg://handoff:\$\(POSTGRES_PASSWORD\)@"
                            rf"handoff-postgres:{port}/handoff", url), url
        assert workload["spec"]["replicas"] >= 2
    postgres = pod_spec(find("StatefulSet", "handoff-postgres"))["containers"][0]
    assert env(postgres)["POSTGRES_DB"] == "handoff" and env(postgres)["POSTGRES_USER"] == "handoff"


def test_the_web_probes_are_endpoints_the_app_serves() -> None:
    [web] = pod_spec(find("Deployment", "handoff-web"))["containers"]
    probes = {web["readinessProbe"]["httpGet"]["path"], web["livenessProbe"]["httpGet"]["path"]}
    assert probes == {"/readyz", "/healthz"}
    source = "".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    for path in probes:
        assert f'Route("{path}"' in source
    service = find("Service", "handoff-web")
    assert service["spec"]["selector"] == find("Deployment", "handoff-web")["spec"]["selector"][
        "matchLabels"]


def test_every_handoff_variable_is_a_setting() -> None:
    fields = {f"HANDOFF_{name.upper()}" for name in Settings.model_fields}
    for workload in (d for d in documents() if d["kind"] == "Deployment"):
        for container in pod_spec(workload)["containers"]:
            named = {n for n in env(container) if n.startswith("HANDOFF_")}
            assert named <= fields, named - fields


def test_the_manifest_runs_this_release() -> None:
    """Handoff's images in the manifest carry the package's version, not :latest."""
    from bot import __version__

    text = (Path(__file__).parent.parent / "deploy" / "kubernetes" / "handoff.yaml").read_text()
    tags = re.findall(r"image: handoff:(\S+)", text)
    assert tags and set(tags) == {__version__}


def test_the_service_monitor_scrapes_every_pod_that_serves_metrics() -> None:
    """deploy/kubernetes/monitoring: headless Services over the web and worker pods' named
    metrics port, and a ServiceMonitor (Prometheus Operator) that selects them."""
    path = ROOT / "deploy" / "kubernetes" / "monitoring" / "servicemonitor.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    services = [d for d in docs if d["kind"] == "Service"]
    [monitor] = [d for d in docs if d["kind"] == "ServiceMonitor"]
    for service in services:
        kubernetes_validate.validate(service, NEWEST, strict=True)
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["handoff"]
    [endpoint] = monitor["spec"]["endpoints"]
    scraped = set()
    for service in services:
        assert service["metadata"]["namespace"] == "handoff"
        assert wanted.items() <= service["metadata"]["labels"].items()
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        [workload] = [d for d in documents() if d["kind"] == "Deployment" and
                      d["spec"]["template"]["metadata"]["labels"] == service["spec"]["selector"]]
        ports = {p["name"]: p["containerPort"] for c in pod_spec(workload)["containers"]
                 for p in c.get("ports", [])}
        assert ports.get("metrics") == 9100
        scraped.add(workload["metadata"]["name"])
    assert scraped == {"handoff-web", "handoff-worker"}
    # the namespace the pods' policies let in on 9100 is the one the monitor lives in
    policy = find("NetworkPolicy", "handoff-web")
    assert monitor["metadata"]["namespace"] in yaml.safe_dump(policy)
