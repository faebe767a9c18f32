"""Extra CA certificates for every sandbox (``HANDOFF_EXTRA_CA_CERTS``): a local HTTPS server
with a throwaway CA, which a command in a real sandbox trusts only with the setting."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from bot.config import Settings
from bot.executor.sandbox import Limits, SandboxError, make_backend
from bot.executor.sandbox.trust import CA_VARIABLES

FETCH = ("python3 -c \"import urllib.request; print(urllib.request.urlopen("
         "'https://localhost:{port}/').read().decode())\"")


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                 signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """(port of an HTTPS server for ``localhost`` signed by a throwaway CA, the CA's PEM file:
    its certificate and, as a careless operator might leave it, its key)."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Throwaway Corp CA", ca_key, "Throwaway Corp CA", ca_key, True)
    leaf = _certificate("localhost", key, "Throwaway Corp CA", ca_key, False)
    (tmp_path / "server.pem").write_bytes(
        leaf.public_bytes(Encoding.PEM) + key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "corp-ca.pem").write_bytes(ca.public_bytes(Encoding.PEM) + ca_key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\n"
                         b"private-mirror")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], tmp_path / "corp-ca.pem"
    finally:
        server.close()


@pytest.mark.parametrize("sandbox", [pytest.param("podman", marks=pytest.mark.podman),
                                     "bubblewrap"])
async def test_a_sandbox_trusts_the_extra_ca_only_with_the_setting(
        sandbox: str, https: tuple[int, Path], tmp_path: Path) -> None:
    if sandbox == "bubblewrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    port, ca = https
    outputs = []
    for extra in (None, ca):
        settings = Settings(sandbox=sandbox, egress_allow_private=True, extra_ca_certs=extra,
                            data_dir=tmp_path / "data")
        backend = make_backend(settings)
        backend.limits = Limits(memory_mb=512, cpus=1, pids=128, timeout=60)
        ws = tmp_path / f"ws-{bool(extra)}"
        ws.mkdir()
        box = await backend.start("ca", ws, egress=[f"localhost:{port}"])
        try:
            outputs.append(await box.exec(FETCH.format(port=port)))
            outputs.append(await box.exec("echo $GIT_SSL_CAINFO $NODE_EXTRA_CA_CERTS; "
                                          "grep -c 'PRIVATE KEY' $SSL_CERT_FILE"))
        finally:
            await box.close()
    without, _, with_ca, variables = outputs
    assert without.exit_code != 0 and "CERTIFICATE_VERIFY_FAILED" in without.stderr
    assert with_ca.exit_code == 0 and with_ca.stdout == "private-mirror\n", with_ca.stderr
    # every tool is pointed at it; the key beside the CA in its file never got in
    assert variables.stdout.splitlines() == [
        "/run/handoff-ca/ca-bundle.pem /run/handoff-ca/ca-bundle.pem", "0"]


def test_the_bundle_keeps_the_public_roots_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    from bot.executor.sandbox.trust import read_certificates

    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(SandboxError, match="holds no PEM certificate"):
        make_backend(Settings(sandbox="bubblewrap", extra_ca_certs=tmp_path / "ca.pem",
                              data_dir=tmp_path / "data"))
    with pytest.raises(ValueError, match="cannot be read"):
        read_certificates(tmp_path / "missing.pem")
    assert len(CA_VARIABLES) == len(set(CA_VARIABLES))


def test_the_bundle_has_the_system_roots_and_the_extra(tmp_path: Path) -> None:
    from bot.executor.sandbox.trust import bundle, read_certificates, system_bundle

    key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Throwaway Corp CA", key, "Throwaway Corp CA", key, True)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(Encoding.PEM))
    folder = bundle(tmp_path / "ca.pem", tmp_path / "out")
    made = (folder / "ca-bundle.pem").read_bytes()
    roots = system_bundle().rstrip(b"\n") + b"\n"
    assert made == roots + ca.public_bytes(Encoding.PEM) and roots.count(b"BEGIN CERT") > 50
    assert read_certificates(tmp_path / "ca.pem") == [ca]
    assert oct((folder / "ca-bundle.pem").stat().st_mode & 0o777) == "0o644"


def test_doctor_says_whether_the_bundle_parses(tmp_path: Path) -> None:
    from bot.doctor import check_corporate_network

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ca.pem").write_bytes(_certificate("Corp CA", key, "Corp CA", key, True)
                                      .public_bytes(Encoding.PEM))
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    good = check_corporate_network(Settings(
        extra_ca_certs=tmp_path / "ca.pem", egress_upstream_proxy="http://u:s3cr3t@proxy:3128"))
    bad = check_corporate_network(Settings(extra_ca_certs=tmp_path / "bad.pem"))
    assert good == [(True, "extra CA certs", "1 certificate(s) every sandbox trusts: CN=Corp CA"),
                    (True, "upstream proxy", "egress goes through proxy:3128 (with credentials)")]
    assert bad[0][:2] == (False, "extra CA certs") and "no PEM certificate" in bad[0][2]
