"""Benchmark: wall time from the labeled webhook to the pull request, stage by stage.

Runs the whole of Handoff on 127.0.0.1 (GitHub simulator, receiver, worker, Podman sandbox)
with a scripted model that finishes at once (one step: create a file, finish). For a small
repository and a large one, each with a cold mirror (first job) and a warm one (second job).
No large public repository can be fetched here, so the large one is made with git fast-import
(--commits, default 20,000, over --files files); pass --repo PATH to use any local clone.
Targets: under 3 s for the small repository on a warm mirror; the warm mirror makes the large
repository's workspace cost independent of its history.

A third, realistic repository (a package with a few hundred tests, no handoff.yml) shows
where a real job's time goes, and that its baseline suite runs beside the agent.

Usage: python bench/pipeline.py [--commits 20000] [--files 2000] [--repo PATH]
                                [--modules 20] [--tests-per-module 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy/sandbox/containers.conf"))

from devkit.stack import Stack, stack  # noqa: E402

TURN = {"tools": [{"tool": "create", "args": {"path": "CHANGELOG.md", "content": "- fix\n"}},
                  {"tool": "finish", "args": {"summary": "Added a changelog entry."}}]}
STAGES = ["accept", "queue", "permission", "workspace", "spec inputs", "sandbox",
          "baseline tests", "agent", "tests after", "push", "pr"]
BESIDE = "baseline tests (beside the agent)"
# The agent on the realistic repository reads, runs one test module, fixes, and finishes.
REALISTIC_TURNS = [
    {"tool": "bash", "args": {"command": "ls pkg tests | head -5"}},
    {"tool": "bash", "args": {"command": "python -m pytest -q -p no:cacheprovider "
                                         "tests/test_mod_0.py"}},
    {"tool": "create", "args": {"path": "CHANGELOG.md", "content": "- fix\n"}},
    {"tool": "finish", "args": {"summary": "Added a changelog entry."}},
    # Shown the file it added before it may finish, the agent keeps it and finishes again.
    {"tool": "finish", "args": {"summary": "Added a changelog entry."}},
]
SHAPES = ROOT / "tests" / "fixtures" / "repos"
# A Go module and an npm package (node:test) from the tests' repository shapes, each fixed
# by one edit; their test commands are discovered and counted test by test.
SHAPE_FIXES = {
    "go": ("go-modules", "mathx/mathx.go", "\tif v > hi {\n\t\treturn lo",
           "\tif v > hi {\n\t\treturn hi"),
    "node": ("node-test", "lib/range.js", "i <= end", "i < end"),
}


def realistic_repo(path: Path, modules: int, tests_per_module: int) -> Path:
    """A Python project shaped like a real one: a package, a tests folder with a few hundred
    tests that take some time, pyproject.toml with its pytest settings, no handoff.yml (the
    test command is discovered)."""
    (path / "pkg").mkdir(parents=True)
    (path / "tests").mkdir()
    (path / "pkg/__init__.py").write_text("")
    (path / "pyproject.toml").write_text(
        "[project]\nname = 'pkg'\nversion = '1.0'\n\n[tool.pytest.ini_options]\n"
        "testpaths = ['tests']\n")
    for m in range(modules):
        (path / f"pkg/mod_{m}.py").write_text(
            "import hashlib\n\n\ndef work(n: int) -> str:\n"
            "    data = str(n).encode()\n    for _ in range(2000):\n"
            "        data = hashlib.sha256(data).digest()\n    return data.hex()\n")
        (path / f"tests/test_mod_{m}.py").write_text(
            f"import pytest\n\nfrom pkg.mod_{m} import work\n\n\n"
            f"@pytest.mark.parametrize('n', range({tests_per_module}))\n"
            "def test_work(n):\n    assert len(work(n)) == 64\n")
    (path / "README.md").write_text("# pkg\n")
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@x",
                    "commit", "-qm", "init"], check=True)
    return path


def shape_repo(path: Path, shape: str) -> Path:
    """One of the tests' repository shapes as a git repository with one commit."""
    shutil.copytree(SHAPES / shape, path)
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@x",
                    "commit", "-qm", "init"], check=True)
    return path


def shape_turns(path: str, old: str, new: str) -> list[dict[str, object]]:
    return [{"tool": "edit", "args": {"path": path, "old_text": old, "new_text": new}},
            {"tool": "finish", "args": {"summary": "Fixed the bug; its test passes now."}}]


def synthetic_repo(path: Path, commits: int, files: int) -> Path:
    """A repository with a long history, written fast with git fast-import."""
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(path)], check=True)
    lines = []
    for n in range(commits):
        name = f"src/module_{n % files}.py"
        content = f"VALUE = {n}\n" + "# filler line\n" * 20
        lines.append(f"commit refs/heads/main\ncommitter Bench <b@x> {1700000000 + n} +0000\n"
                     f"data {len(f'change {n}')}\nchange {n}\n"
                     f"M 644 inline {name}\ndata {len(content)}\n{content}\n")
    test = "def test_ok():\n    assert 1 == 1\n"
    lines.append("commit refs/heads/main\ncommitter Bench <b@x> 1800000000 +0000\ndata 5\n"
                 f"tests\nM 644 inline test_ok.py\ndata {len(test)}\n{test}\n")
    subprocess.run(["git", "fast-import", "--quiet"], input="".join(lines).encode(),
                   cwd=path, check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=path, check=True)
    return path


async def one_job(s: Stack, repo: str, title: str) -> dict[str, float]:
    number = s.sim.open_issue(repo, title, "Add a changelog entry.", "acme").number
    started = time.monotonic()
    s.sim.label_issue(repo, number, "agent", "acme")
    job = await s.wait_job(lambda j: j.repo == repo and j.issue_number == number, timeout=300)
    total = time.monotonic() - started
    if job.state != "succeeded":
        raise SystemExit(f"job failed: {job.category}: {job.reason}")
    delivery = next(d for d in s.sim.world.deliveries if d.action == "labeled"
                    and d.repository_id == s.sim.get_repo(repo).id and
                    f'"number": {number},' in d.payload.decode())
    timings = dict(job.result.timings)
    timings["accept"] = delivery.attempts[0]["duration"]
    timings["queue"] = (job.started_at or job.created_at) - job.created_at
    timings["total"] = total
    return timings


# A project with real dependencies from PyPI (about 30 packages with what they need),
# installed by the setup Handoff guesses from requirements.txt.
DEPS = ["flask", "requests", "pydantic", "httpx", "rich", "sqlalchemy", "attrs", "pyyaml",
        "python-dateutil", "packaging", "tabulate", "toolz"]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def deps_repo(path: Path) -> Path:
    """A small service that imports its dependencies, with one test of them."""
    path.mkdir(parents=True)
    (path / "requirements.txt").write_text("".join(f"{d}\n" for d in DEPS))
    (path / "app.py").write_text("import flask, requests, pydantic, httpx, rich, sqlalchemy\n\n"
                                 "def ok() -> bool:\n    return True\n")
    (path / "test_app.py").write_text("import app\n\n\ndef test_ok():\n"
                                      "    assert app.ok()\n")
    (path / ".github").mkdir()
    (path / ".github/handoff.yml").write_text("test_command: python3 -m pytest -q -p "
                                              "no:cacheprovider\n")
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@x",
                    "commit", "-qm", "init"], check=True)
    return path


def image_with_host_ca(tmp: Path, base: str) -> str:
    """The sandbox image with this host's CA bundle, so the sandbox trusts what the host
    trusts (here, PyPI is reached through an intercepting proxy with its own CA)."""
    tag = "handoff-sandbox:bench-ca"
    context = tmp / "ca-image"
    context.mkdir()
    shutil.copy(HOST_CA, context / "ca.crt")
    (context / "Containerfile").write_text(
        f"FROM {base}\nUSER root\nCOPY ca.crt /etc/ssl/certs/ca-certificates.crt\n"
        "USER agent\n")
    subprocess.run(["podman", "build", "-q", "--pull=never", "-t", tag, str(context)],
                   check=True, capture_output=True)
    return tag


def first_step(job_transcript: str, labeled_at: float) -> float:
    """Seconds from the label to the agent's first model answer (the transcript's first
    ``model`` line)."""
    import json

    for line in Path(job_transcript).read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "model":
            return float(entry["at"]) - labeled_at
    return float("nan")


async def deps_jobs(s: Stack, src: Path) -> dict[str, dict[str, float]]:
    """Two jobs on the dependencies repository: the first sets it up, the second starts warm."""
    s.sim.import_repo("acme/deps", src)
    rows = {}
    for label in ("cold", "warm"):
        started = time.time()
        timings = await one_job(s, "acme/deps", f"Bench {label}")
        job = next(j for j in await s.store.list_jobs(50) if j.repo == "acme/deps")
        if job.result.setup.environment != label:
            raise SystemExit(f"deps {label}: started {job.result.setup.environment}: "
                             f"{job.result.setup.environment_reason}")
        timings["first step"] = first_step(job.result.agent.transcript, started)
        rows[f"deps {label}"] = timings
    return rows


async def shape_rows(tmp: Path) -> dict[str, dict[str, Any]]:
    """Label to PR, cold and warm, for the Go module and the npm package (SHAPE_FIXES)."""
    rows: dict[str, dict[str, Any]] = {}
    script = [t for _, *fix in SHAPE_FIXES.values() for t in shape_turns(*fix) * 2]
    async with stack(tmp / "stack3", script) as s:
        for label, (shape, *_) in SHAPE_FIXES.items():
            s.sim.import_repo(f"acme/{label}", shape_repo(tmp / f"{label}-src", shape))
            rows[f"{label} cold"] = await one_job(s, f"acme/{label}", "Bench cold")
            rows[f"{label} warm"] = await one_job(s, f"acme/{label}", "Bench warm")
            job = next(j for j in await s.store.list_jobs(50) if j.repo == f"acme/{label}")
            rows[f"{label} warm"]["_tests"] = job.result.tests.after
            rows[f"{label} warm"]["_command"] = job.result.tests.command
    return rows


def print_shapes(rows: dict[str, dict[str, Any]]) -> None:
    for label in SHAPE_FIXES:
        row = rows[f"{label} warm"]
        print(f"{label} repository (`{row['_command']}`, discovered): label to PR "
              f"{row['total']:.2f} s warm, {rows[f'{label} cold']['total']:.2f} s cold; "
              f"tests after: {row['_tests']}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if args.only == "deps":
            return await deps_only(tmp)
        if args.only == "shapes":
            return print_shapes(await shape_rows(tmp))
        large_src = Path(args.repo) if args.repo else synthetic_repo(
            tmp / "large-src", args.commits, args.files)
        history = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=large_src,
                                 capture_output=True, text=True).stdout.strip()
        async with stack(tmp / "stack", [TURN], repeat_last=True) as s:
            s.sim.add_repo("acme/small", {"README.md": "# small\n", ".github/handoff.yml":
                                          "test_command: python3 -c 'print(1)'\n"})
            s.sim.import_repo("acme/large", large_src)
            rows = {}
            for repo, label in (("acme/small", "small"), ("acme/large", "large")):
                rows[f"{label} cold"] = await one_job(s, repo, "Bench cold")
                rows[f"{label} warm"] = await one_job(s, repo, "Bench warm")
        realistic = realistic_repo(tmp / "realistic-src", args.modules, args.tests_per_module)
        async with stack(tmp / "stack2", REALISTIC_TURNS * 2) as s:
            s.sim.import_repo("acme/realistic", realistic)
            rows["realistic cold"] = await one_job(s, "acme/realistic", "Bench cold")
            rows["realistic warm"] = await one_job(s, "acme/realistic", "Bench warm")
        rows.update(await shape_rows(tmp))
        print(f"large repository: {history} commits"
              + (f" (synthetic, {args.files} files)" if not args.repo else f" ({args.repo})"))
        print(f"{'stage (s)':<15}" + "".join(f"{name:>12}" for name in rows))
        for stage in [*STAGES, BESIDE, "total"]:
            label = "baseline beside" if stage == BESIDE else stage
            print(f"{label:<15}" + "".join(f"{float(r.get(stage, 0.0)):>12.3f}"
                                           for r in rows.values()))
        small = rows["small warm"]["total"]
        print(f"small repository, warm mirror: {small:.2f} s (target < 3 s)")
        warm = rows["realistic warm"]
        print(f"realistic repository ({args.modules * args.tests_per_module} tests, command "
              f"discovered): label to PR {warm['total']:.2f} s warm; its baseline suite "
              f"({warm.get(BESIDE, 0):.2f} s) ran beside the agent ({warm['agent']:.2f} s)")
        print_shapes(rows)
        print(f"large repository workspace: cold {rows['large cold']['workspace']:.2f} s, "
              f"warm {rows['large warm']['workspace']:.2f} s (target: cold <= 3 s)")
        if args.only != "large":
            await deps_only(tmp)


async def deps_only(tmp: Path) -> None:
    """The repository with real dependencies, cold then warm, through the host's proxy."""
    image = image_with_host_ca(tmp, os.environ.get("HANDOFF_SANDBOX_IMAGE",
                                                   "handoff-sandbox:dev"))
    async with stack(tmp / "stack4", [TURN], repeat_last=True, sandbox_image=image,
                     egress_allow_private=True, command_timeout=600) as s:
        rows = await deps_jobs(s, deps_repo(tmp / "deps-src"))
    print(f"{'deps (s)':<15}" + "".join(f"{name:>12}" for name in rows))
    for stage in ["workspace", "sandbox", "setup", "keep environment", "first step", "total"]:
        print(f"{stage:<15}" + "".join(f"{float(r.get(stage, 0.0)):>12.3f}"
                                       for r in rows.values()))
    cold, warm = rows["deps cold"], rows["deps warm"]
    print(f"repository with {len(DEPS)} requirements from PyPI: setup cold "
          f"{cold['setup']:.2f} s, warm {warm['setup']:.2f} s "
          f"({100 * warm['setup'] / cold['setup']:.1f}% of cold; target <= 10%); label to the "
          f"agent's first step cold {cold['first step']:.2f} s, warm {warm['first step']:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=20000)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repo", help="a local clone to use as the large repository")
    parser.add_argument("--modules", type=int, default=20)
    parser.add_argument("--tests-per-module", type=int, default=15)
    parser.add_argument("--only", choices=["large", "deps", "shapes"],
                        help="large: the first parts, without the dependencies repository; "
                             "deps: that repository only; shapes: the Go and Node rows only")
    asyncio.run(main(parser.parse_args()))
