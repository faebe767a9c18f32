"""The Kubernetes objects of one sandbox: its Pod and its NetworkPolicy, as plain manifests.

A sandbox pod runs the sandbox image as uid 1000 with no capabilities, no privilege
escalation, a read-only root, the runtime's default seccomp profile, no service account token,
no service links and no DNS. Its workspace and read-only mounts are ``emptyDir`` volumes that
an init container (``stage``) fills over exec before the sandbox container starts; ``/tmp`` is
memory. A NetworkPolicy made before the pod denies all its ingress and egress; while a phase
may use the network it lets the pod reach one address and port: its egress proxy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from bot.executor.sandbox.base import SANDBOX_ENV, SANDBOX_UID, WORKDIR, Limits

LABEL = "handoff.sandbox"  # every sandbox pod and policy has LABEL=1, as containers do
POD_LABEL = "handoff.pod"  # the pod's own name: what its NetworkPolicy selects
STAGE = "/run/handoff-stage"  # where the init container sees the volumes it fills
READY = f"{STAGE}/ctl/ready"  # written once the volumes are filled: the init container ends
STAGE_WAIT = 600  # seconds the init container waits to be filled before it gives up
SANDBOX_CONTAINER = "sandbox"
STAGE_CONTAINER = "stage"


def dns_label(text: str, limit: int = 40) -> str:
    """``text`` as a lowercase DNS label part: [a-z0-9-], no leading or trailing dash."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-") or "x"


def pod_name(job_id: int | str, suffix: str) -> str:
    return f"handoff-job-{dns_label(str(job_id))}-{suffix}"


def quantity_mb(mb: int) -> str:
    return f"{mb}Mi"


def security_context() -> dict[str, Any]:
    """The container's: nothing a process in it could raise itself to."""
    return {
        "runAsNonRoot": True, "runAsUser": SANDBOX_UID, "runAsGroup": SANDBOX_UID,
        "privileged": False, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(limits: Limits, disk_mb: int) -> dict[str, Any]:
    """Limits from ``Limits``; memory is requested whole (it cannot be taken back), CPU a
    quarter of the limit."""
    return {
        "limits": {"cpu": f"{limits.cpus:g}", "memory": quantity_mb(limits.memory_mb),
                   "ephemeral-storage": quantity_mb(disk_mb)},
        "requests": {"cpu": f"{max(limits.cpus / 4, 0.05):g}",
                     "memory": quantity_mb(limits.memory_mb),
                     "ephemeral-storage": quantity_mb(min(disk_mb, 256))},
    }


def stage_command() -> list[str]:
    """The init container waits, at most STAGE_WAIT seconds, for its volumes to be filled."""
    tries = STAGE_WAIT * 5
    return ["sh", "-c", f"i=0; until [ -e {READY} ]; do sleep 0.2; i=$((i+1)); "
            f"[ $i -lt {tries} ] || exit 1; done"]


def pod_manifest(name: str, namespace: str, image: str, limits: Limits,
                 labels: dict[str, str], annotations: dict[str, str],
                 mounts: Sequence[tuple[str, int]], deadline: int,
                 runtime_class: str = "") -> dict[str, Any]:
    """The sandbox pod. ``mounts`` are (sandbox path, size in MB) of read-only volumes."""
    volumes: list[dict[str, Any]] = [
        {"name": "ws", "emptyDir": {"sizeLimit": quantity_mb(limits.workspace_mb)}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": quantity_mb(limits.tmp_mb)}},
        {"name": "ctl", "emptyDir": {"sizeLimit": "1Mi"}},
    ]
    staged: list[dict[str, Any]] = [{"name": "ws", "mountPath": f"{STAGE}/ws"},
                                    {"name": "ctl", "mountPath": f"{STAGE}/ctl"}]
    mounted: list[dict[str, Any]] = [{"name": "ws", "mountPath": WORKDIR},
                                     {"name": "tmp", "mountPath": "/tmp"}]
    disk = limits.workspace_mb + 64
    for i, (path, size_mb) in enumerate(mounts):
        volumes.append({"name": f"m{i}", "emptyDir": {"sizeLimit": quantity_mb(size_mb)}})
        staged.append({"name": f"m{i}", "mountPath": f"{STAGE}/m{i}"})
        mounted.append({"name": f"m{i}", "mountPath": path, "readOnly": True})
        disk += size_mb
    container = {"image": image, "imagePullPolicy": "IfNotPresent",
                 "securityContext": security_context(), "resources": resources(limits, disk),
                 "env": [{"name": k, "value": v} for k, v in SANDBOX_ENV.items()]}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline,
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False, "hostPID": False, "hostIPC": False,
        # The pause container is PID 1: it reaps what the per-command kill leaves behind.
        "shareProcessNamespace": True,
        # Nothing to ask: names are resolved by the egress proxy, outside the pod.
        "dnsPolicy": "None", "dnsConfig": {"nameservers": ["127.0.0.1"]},
        "securityContext": {"runAsNonRoot": True, "runAsUser": SANDBOX_UID,
                            "runAsGroup": SANDBOX_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [{**container, "name": STAGE_CONTAINER, "command": stage_command(),
                            "volumeMounts": staged}],
        "containers": [{**container, "name": SANDBOX_CONTAINER,
                        "command": ["sleep", "infinity"], "workingDir": WORKDIR,
                        "volumeMounts": mounted}],
        "volumes": volumes,
    }
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {**labels, POD_LABEL: name}, "annotations": annotations},
            "spec": spec}


def egress_rules(proxy: tuple[str, int] | None) -> list[dict[str, Any]]:
    """No rule (no egress at all), or one: TCP to the proxy's address and port only."""
    if proxy is None:
        return []
    host, port = proxy
    bits = 32 if ipaddress.ip_address(host).version == 4 else 128
    return [{"to": [{"ipBlock": {"cidr": f"{host}/{bits}"}}],
             "ports": [{"protocol": "TCP", "port": port}]}]


def network_policy(name: str, namespace: str, labels: dict[str, str],
                   annotations: dict[str, str], proxy: tuple[str, int] | None = None
                   ) -> dict[str, Any]:
    """The pod's policy: no ingress; egress to the proxy only while ``proxy`` is given."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "annotations": annotations},
            "spec": {"podSelector": {"matchLabels": {POD_LABEL: name}},
                     "policyTypes": ["Ingress", "Egress"], "ingress": [],
                     "egress": egress_rules(proxy)}}
