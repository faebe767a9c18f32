"""Extra CA certificates every sandbox trusts (``HANDOFF_EXTRA_CA_CERTS``).

Where registries are reached through an intercepting proxy or a private mirror, the
organisation's CA must be trusted by pip, npm, git, curl, Go and Python in every sandbox.
``bundle`` writes one PEM file: the public roots the worker trusts (for bubblewrap, the
sandbox's own system; Debian images carry the same Mozilla set) and the extra certificates,
re-serialised so nothing but certificates (never a key kept in the same file) is copied.
``TrustingBackend`` mounts its folder read-only in each sandbox at ``CA_DIR`` and points the
tools' variables (``CA_VARIABLES``) at it in every command.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bot.executor.sandbox.base import Backend, CommandResult, LeaseCheck, Limits, Sandbox

CA_DIR = "/run/handoff-ca"
CA_NAME = "ca-bundle.pem"
CA_FILE = f"{CA_DIR}/{CA_NAME}"
# OpenSSL (Python, Go, curl), requests, pip, Node and npm, git, curl, Cargo.
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS",
                "GIT_SSL_CAINFO", "CURL_CA_BUNDLE", "CARGO_HTTP_CAINFO")
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def read_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates of a PEM file; ValueError (saying why) when it has none or is not PEM."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path} cannot be read: {exc.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificate that parses") from None
    return certificates


def system_bundle() -> bytes:
    """The public roots this host trusts, as PEM."""
    paths = [ssl.get_default_verify_paths().cafile or "", *SYSTEM_BUNDLES]
    for path in paths:
        if path and os.path.isfile(path):
            return Path(path).read_bytes()
    import certifi  # httpx's; the last resort on a host without a system bundle

    return Path(certifi.where()).read_bytes()


def bundle(extra: Path, folder: Path) -> Path:
    """``folder/ca-bundle.pem``: the host's roots and ``extra``'s certificates, readable by
    any sandbox user; written whole (a concurrent worker never reads half of it)."""
    certificates = read_certificates(extra)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    text = system_bundle().rstrip(b"\n") + b"\n" + b"".join(
        c.public_bytes(Encoding.PEM) for c in certificates)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".ca-")
    with os.fdopen(fd, "wb") as out:
        out.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, folder / CA_NAME)
    return folder


class TrustingSandbox:
    """A sandbox whose every command is told where the combined bundle is."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box

    def __getattr__(self, name: str) -> Any:
        return getattr(self.box, name)

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None, env: dict[str, str] | None = None
                   ) -> CommandResult:
        variables = dict.fromkeys(CA_VARIABLES, CA_FILE)
        return await self.box.exec(command, timeout, stdin, {**variables, **(env or {})})

    async def set_egress(self, allow: list[str]) -> None:
        await self.box.set_egress(allow)

    @property
    def egress_denied(self) -> list[str]:
        return self.box.egress_denied

    @property
    def egress_refusals(self) -> dict[str, list[str]]:
        return self.box.egress_refusals

    @property
    def limit_hit(self) -> CommandResult | None:
        return self.box.limit_hit

    async def close(self) -> None:
        await self.box.close()


class TrustingBackend:
    """A backend whose sandboxes see ``folder`` (made by ``bundle``) read-only at ``CA_DIR``."""

    def __init__(self, inner: Backend, folder: Path) -> None:
        self.inner, self.folder = inner, folder
        self.name: str = inner.name
        self.limits: Limits = inner.limits

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start(self, job_id: int | str, workspace: Path, egress: list[str] | None = None,
                    image: str | None = None, owner: str = "",
                    mounts: Sequence[tuple[Path, str]] = ()) -> Sandbox:
        box = await self.inner.start(job_id, workspace, egress=egress, image=image,
                                     owner=owner, mounts=[*mounts, (self.folder, CA_DIR)])
        return TrustingSandbox(box)

    async def cleanup_orphans(self, held: LeaseCheck | None = None) -> list[str]:
        return await self.inner.cleanup_orphans(held)

    def supports(self, feature: str) -> bool:
        return self.inner.supports(feature)

    async def close(self) -> None:
        await self.inner.close()
