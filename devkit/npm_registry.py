"""A local npm registry: real packages, fetched once, served on 127.0.0.1 as the registry
protocol has it, for tests and benches that install from npm without the public internet.

``fetch`` downloads the tarballs a list names (``name@version integrity`` lines) with the
host's own ``npm pack``, so a host that reaches registry.npmjs.org through a proxy or a
mirror needs nothing more, and checks each against its integrity. ``serve`` answers
``GET /<name>`` with a packument (every version's ``package.json`` from its tarball, with
``dist.tarball``, ``dist.integrity`` and ``dist.shasum``, and ``dist-tags.latest``) and
``GET /<name>/-/<file>.tgz`` with the tarball; anything else is a 404, as on the registry.

``python -m devkit.npm_registry fetch`` fills the cache (``HANDOFF_NPM_CACHE`` or
``~/.cache/handoff/npm``) from ``tests/fixtures/npm/packages.txt``."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

PACKAGES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "npm" / "packages.txt"


def cache_dir() -> Path:
    """Where the fetched tarballs are kept between runs."""
    default = Path.home() / ".cache" / "handoff" / "npm"
    return Path(os.environ.get("HANDOFF_NPM_CACHE") or default)


@dataclass(frozen=True)
class Wanted:
    """One package version of the list, and the integrity its tarball must have."""

    name: str
    version: str
    integrity: str

    @property
    def file(self) -> str:
        """The tarball's name in the cache: ``@scope/name`` becomes ``scope-name``."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


def wanted(path: Path = PACKAGES) -> list[Wanted]:
    """The package versions a list names."""
    found = []
    for line in path.read_text().splitlines():
        if line.strip():
            spec, integrity = line.split()
            name, _, version = spec.rpartition("@")
            found.append(Wanted(name, version, integrity))
    return found


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(packages: list[Wanted], cache: Path) -> int:
    """Download what the cache lacks with ``npm pack``; the number fetched. Raises when a
    tarball is missing afterwards or does not match its integrity."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not (cache / p.file).is_file()]
    if missing:
        with tempfile.TemporaryDirectory(prefix="npm-pack-") as work:
            packed = subprocess.run(
                ["npm", "pack", "--silent", "--pack-destination", str(cache),
                 *(f"{p.name}@{p.version}" for p in missing)], cwd=work,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
        if packed.returncode:
            raise RuntimeError(f"npm pack could not fetch {len(missing)} packages into {cache} "
                               f"(the host's npm reaches its registry?): {packed.stderr[-500:]}")
    for package in packages:
        path = cache / package.file
        if not path.is_file() or integrity_of(path.read_bytes()) != package.integrity:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"{package.name}@{package.version}: not fetched, or its "
                               "tarball does not match its integrity")
    return len(missing)


def _manifest(tarball: Path) -> dict[str, object]:
    """The ``package.json`` inside a tarball (in its top folder, ``package/`` as a rule)."""
    with tarfile.open(tarball) as archive:
        member = min((m for m in archive.getmembers()
                      if m.isfile() and m.name.count("/") == 1
                      and m.name.endswith("/package.json")), key=lambda m: m.name)
        data = archive.extractfile(member)
        assert data is not None
        return dict(json.loads(data.read()))


def _version_key(version: str) -> tuple[tuple[int, ...], int]:
    core, dash, _ = version.partition("-")
    numbers = tuple(int(n) if n.isdigit() else 0 for n in core.split("."))
    return numbers, 0 if dash else 1  # a prerelease sorts before its release


class Registry:
    """Packuments and tarballs from a cache of tarballs, for a server at ``url``."""

    def __init__(self, packages: list[Wanted], cache: Path, url: str) -> None:
        self.url = url.rstrip("/")
        self.tarballs: dict[str, Path] = {}
        self.documents: dict[str, bytes] = {}
        self.hits: list[str] = []
        versions: dict[str, dict[str, object]] = {}
        for package in packages:
            path = cache / package.file
            data = path.read_bytes()
            route = f"/{package.name}/-/{package.name.rpartition('/')[2]}-{package.version}.tgz"
            self.tarballs[route] = path
            manifest = {**_manifest(path), "name": package.name, "version": package.version,
                        "_id": f"{package.name}@{package.version}",
                        "dist": {"tarball": self.url + route, "integrity": package.integrity,
                                 "shasum": hashlib.sha1(data).hexdigest()}}
            versions.setdefault(package.name, {})[package.version] = manifest
        for name, found in versions.items():
            latest = max(found, key=_version_key)
            self.documents[f"/{name}"] = json.dumps(
                {"_id": name, "name": name, "dist-tags": {"latest": latest},
                 "versions": found}).encode()

    def answer(self, path: str) -> tuple[bytes, str] | None:
        """The body and content type for a request path, or None (a 404)."""
        self.hits.append(path)
        path = unquote(path.split("?")[0])  # npm asks for @scope%2fname
        if path in self.documents:
            return self.documents[path], "application/json"
        if path in self.tarballs:
            return self.tarballs[path].read_bytes(), "application/octet-stream"
        return None


@contextlib.contextmanager
def serve(packages: list[Wanted], cache: Path, host: str = "127.0.0.1",
          port: int = 0) -> Iterator[Registry]:
    """A registry on ``host:port`` (an ephemeral port by default) for as long as the block
    runs; its URL is ``registry.url`` and what was asked is ``registry.hits``."""
    holder: list[Registry] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as npm's agents expect

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            found = holder[0].answer(self.path)
            body, kind = found or (b'{"error":"Not found"}', "application/json")
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            if self.headers.get("Connection", "").lower() == "close":
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 512  # npm opens dozens of connections at once, as servers take

    server = Server((host, port), Handler)
    server.daemon_threads = True
    holder.append(Registry(packages, cache, f"http://{host}:{server.server_address[1]}/"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main(argv: list[str]) -> int:
    """``fetch``: fill the cache; ``serve [PORT]``: serve it until interrupted."""
    packages, cache = wanted(), cache_dir()
    if argv[:1] == ["fetch"]:
        print(f"{fetch(packages, cache)} fetched, {len(packages)} in {cache}")
        return 0
    if argv[:1] == ["serve"]:
        fetch(packages, cache)
        with serve(packages, cache, port=int(argv[1]) if len(argv) > 1 else 0) as registry:
            print(registry.url, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        return 0
    print("usage: python -m devkit.npm_registry fetch | serve [PORT]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
