"""Sandboxes: where every command of an agent runs. ``make_backend`` picks one by name."""

from __future__ import annotations

import hashlib
import logging

from bot.config import Settings
from bot.executor.sandbox.base import Backend, CommandResult, Limits, Sandbox, SandboxError

log = logging.getLogger("handoff.sandbox")


def limits_from(settings: Settings) -> Limits:
    return Limits(memory_mb=settings.sandbox_memory_mb, cpus=settings.sandbox_cpus,
                  pids=settings.sandbox_pids, timeout=settings.command_timeout,
                  output_cap=settings.output_cap_bytes,
                  workspace_mb=settings.workspace_max_mb)


def make_backend(settings: Settings) -> Backend:
    """The backend the settings name: podman, docker, bubblewrap or kubernetes; or local, for tests
    only (it isolates nothing), and only when named (``HANDOFF_SANDBOX=local``). With
    ``extra_ca_certs``, its every sandbox trusts them (``trust.TrustingBackend``)."""
    backend = _named_backend(settings)
    if settings.extra_ca_certs is None or settings.sandbox == "local":
        return backend
    from bot.executor.sandbox.trust import TrustingBackend, bundle

    try:
        folder = bundle(settings.extra_ca_certs, settings.data_dir / "sandbox-ca")
    except (ValueError, OSError) as exc:
        raise SandboxError(f"HANDOFF_EXTRA_CA_CERTS: {exc}") from None
    return TrustingBackend(backend, folder.resolve())


def _named_backend(settings: Settings) -> Backend:
    limits = limits_from(settings)
    upstream = settings.egress_upstream_proxy.get_secret_value()
    if settings.sandbox == "local":
        from bot.executor.sandbox.local import LocalBackend

        log.warning("sandbox backend 'local': commands run on the host, isolated from "
                    "nothing; for tests only")
        return LocalBackend(limits)
    if settings.sandbox == "bubblewrap":
        from bot.executor.sandbox.bubblewrap import BubblewrapBackend

        return BubblewrapBackend(limits, allow_private=settings.egress_allow_private,
                                 upstream_proxy=upstream)
    # Sandboxes of one deployment (one store) are reaped by that store's leases.
    deployment = hashlib.sha256(settings.db_url.encode()).hexdigest()[:12]
    if settings.sandbox == "kubernetes":
        from bot.executor.sandbox.kubernetes import KubernetesBackend

        first, _, last = settings.kubernetes_proxy_ports.partition("-")
        return KubernetesBackend(settings.sandbox_image, limits,
                                 namespace=settings.kubernetes_namespace,
                                 proxy_host=settings.kubernetes_proxy_host,
                                 proxy_ports=range(int(first), int(last) + 1),
                                 deadline=settings.kubernetes_deadline,
                                 runtime_class=settings.kubernetes_runtime_class,
                                 allow_private=settings.egress_allow_private,
                                 deployment=deployment, upstream_proxy=upstream)
    if settings.sandbox in ("podman", "docker"):
        from bot.executor.sandbox.container import ContainerBackend

        return ContainerBackend(settings.sandbox, settings.sandbox_image, limits,
                                allow_private=settings.egress_allow_private,
                                deployment=deployment, upstream_proxy=upstream)
    raise SandboxError(f"unknown sandbox backend {settings.sandbox!r}")


__all__ = ["Backend", "CommandResult", "Limits", "Sandbox", "SandboxError", "make_backend"]
