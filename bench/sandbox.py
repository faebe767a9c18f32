"""Benchmark: time from "start a sandbox" to the first command's output, and one exec's cost.

Usage: python bench/sandbox.py [--runs 20]. Prints min, median and max per backend.
Targets on the CI machine: under 300 ms to first output with Podman, under 50 ms with bubblewrap.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bot.executor.sandbox import Backend, Limits
from bot.executor.sandbox.bubblewrap import BubblewrapBackend
from bot.executor.sandbox.container import ContainerBackend


def line(name: str, what: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (f"{name:<11} {what:<16} min {min(ms):7.1f} ms  median {statistics.median(ms):7.1f} ms"
            f"  max {max(ms):7.1f} ms  (n={len(ms)})")


async def measure(backend: Backend, runs: int) -> None:
    first, execs = [], []
    for i in range(runs):
        with tempfile.TemporaryDirectory() as ws:
            t0 = time.perf_counter()
            box = await backend.start(f"bench-{i}", Path(ws))
            result = await box.exec("echo ready")
            first.append(time.perf_counter() - t0)
            assert result.stdout == "ready\n", result
            t1 = time.perf_counter()
            await box.exec("true")
            execs.append(time.perf_counter() - t1)
            await box.close()
    print(line(backend.name, "to first output", first))
    print(line(backend.name, "one exec", execs))


async def main(runs: int) -> None:
    limits = Limits(memory_mb=512, pids=256, timeout=60)
    os.environ.setdefault("CONTAINERS_CONF", str(Path(__file__).parent.parent /
                                                 "deploy/sandbox/containers.conf"))
    if shutil.which("podman"):
        await measure(ContainerBackend("podman", "handoff-sandbox:dev", limits), runs)
    else:
        print("podman: not installed, skipped")
    if shutil.which("bwrap"):
        await measure(BubblewrapBackend(limits), runs)
    else:
        print("bubblewrap: not installed, skipped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
