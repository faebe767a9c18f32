"""Benchmark: ``npm install`` on the host against the same install in Handoff's sandbox,
through its egress proxy, from a local registry serving real packages (devkit/npm_registry).

Usage: python bench/npm_install.py [--runs 3] [--repo node-mocha] [--backend podman]
Prints the median seconds of each, their ratio and the packages installed. Issue 24's target:
the sandbox's install finishes in about the time the host's takes (it was killed at 600 s)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bot.executor.dependencies import NPM_FLAGS
from bot.executor.sandbox import Backend, Limits
from bot.executor.sandbox.bubblewrap import BubblewrapBackend
from bot.executor.sandbox.container import ContainerBackend
from devkit import npm_registry

ROOT = Path(__file__).resolve().parent.parent
REPOS = ROOT / "tests" / "fixtures" / "repos"
COUNT = ("node -p \"Object.keys(require('./node_modules/.package-lock.json').packages)"
         ".length\"")


def _install_command(repo: Path) -> str:
    """What Handoff's setup runs for the repository: ``npm ci`` where there is a lock."""
    verb = "ci" if (repo / "package-lock.json").exists() else "install"
    return f"npm {verb} {NPM_FLAGS}"


def on_host(repo: Path, registry: str) -> tuple[float, int]:
    """Seconds of a cold install on the host (an empty npm cache), and packages installed."""
    with tempfile.TemporaryDirectory(prefix="npm-bench-") as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(repo, work)
        env = {**os.environ, "npm_config_registry": registry,
               "npm_config_cache": str(Path(tmp) / "cache")}
        started = time.perf_counter()
        subprocess.run(_install_command(repo), shell=True, cwd=work, env=env, check=True,
                       capture_output=True, timeout=600)
        seconds = time.perf_counter() - started
        count = subprocess.run(COUNT, shell=True, cwd=work, capture_output=True, text=True)
        return seconds, int(count.stdout)


async def in_sandbox(backend: Backend, repo: Path, registry: str, host: str, n: int
                     ) -> tuple[float, int]:
    """Seconds of the same install in a fresh sandbox whose egress allows the registry alone,
    as the setup runs it (the registry in ``npm_config_registry``)."""
    with tempfile.TemporaryDirectory(prefix="npm-bench-") as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(repo, work)
        box = await backend.start(f"npm-bench-{n}", work, egress=[host])
        try:
            started = time.perf_counter()
            done = await box.exec(_install_command(repo),
                                  env={"npm_config_registry": registry})
            seconds = time.perf_counter() - started
            if not done.ok:
                raise RuntimeError(f"the install failed: {done.describe()}\n{done.stderr}")
            count = await box.exec(COUNT)
            return seconds, int(count.stdout)
        finally:
            await box.close()


async def main(runs: int, repo_name: str, backend_name: str) -> None:
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy/sandbox/containers.conf"))
    repo = REPOS / repo_name
    packages, cache = npm_registry.wanted(), npm_registry.cache_dir()
    npm_registry.fetch(packages, cache)
    limits = Limits(timeout=600)
    backend: Backend = BubblewrapBackend(limits, allow_private=True) \
        if backend_name == "bubblewrap" else \
        ContainerBackend("podman", os.environ.get("HANDOFF_SANDBOX_IMAGE", "handoff-sandbox:dev"),
                         limits, allow_private=True)
    with npm_registry.serve(packages, cache) as registry:
        host = registry.url.split("//")[1].rstrip("/")
        host_runs = [on_host(repo, registry.url) for _ in range(runs)]
        box_runs = [await in_sandbox(backend, repo, registry.url, host, n) for n in range(runs)]
    host_s = statistics.median(s for s, _ in host_runs)
    box_s = statistics.median(s for s, _ in box_runs)
    installed = {c for _, c in host_runs + box_runs}
    print(f"{repo_name}: `{_install_command(repo)}`, {'/'.join(map(str, installed))} "
          f"packages, {runs} cold runs each")
    print(f"  host npm install          median {host_s:6.1f} s  "
          f"({', '.join(f'{s:.1f}' for s, _ in host_runs)})")
    print(f"  {backend_name} + egress proxy  median {box_s:6.1f} s  "
          f"({', '.join(f'{s:.1f}' for s, _ in box_runs)})")
    print(f"  sandbox / host            {box_s / host_s:6.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repo", default="node-mocha", choices=["node-mocha", "node-jest"])
    parser.add_argument("--backend", default="podman", choices=["podman", "bubblewrap"])
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.repo, args.backend))
