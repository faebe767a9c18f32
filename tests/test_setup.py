"""Setup without configuration: the dependencies a repository declares are installed through
the egress proxy (here from a package index on 127.0.0.1, as a mirror would serve them), and
what a setup leaves in the work tree never becomes part of the agent's change."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT
from helpers import package_index, wheel

from bot.executor.dependencies import build_files_changed, setup_from
from bot.executor.gitops import Checkout
from devkit.stack import stack

REPO = "acme/calc"


def test_declared_dependencies_choose_the_install() -> None:
    assert setup_from({"README.md"}, {}) is None
    reqs = setup_from({"requirements.txt", "requirements-dev.txt"},
                      {"requirements.txt": "requests\n", "requirements-dev.txt": "pytest\n"})
    assert reqs and reqs.command == ("pip install --only-binary :all: -r requirements.txt "
                                     "-r requirements-dev.txt")
    project = setup_from({"pyproject.toml"}, {"pyproject.toml": (
        "[project]\nname = 'x'\ndependencies = ['attrs']\n"
        "[project.optional-dependencies]\ntest = ['pytest', 'x[extra]']\n")})
    # The default branch's declared requirements as wheels; the project's own build (its
    # setup.py or backend) only once the network is closed.
    assert project and project.command == "pip install --only-binary :all: attrs pytest"
    assert project.offline == "pip install --no-deps --no-build-isolation --no-index -e ."
    assert setup_from({"pyproject.toml"}, {"pyproject.toml": "[tool.pytest.ini_options]\n"}) \
        is None  # nothing declared: nothing to install
    node = setup_from({"package.json", "package-lock.json"},
                      {"package.json": '{"devDependencies": {"jest": "^29"}}'})
    assert node and node.command == "npm ci --ignore-scripts --no-audit --no-fund"
    tox = setup_from({"tox.ini"}, {"tox.ini": "[tox]\n[testenv]\ndeps =\n    pytest>=7\n"
                                              "    -r requirements.txt\n    {env:EXTRA}\n"
                                              "    hypothesis\ncommands = pytest\n"})
    assert tox is not None and \
        tox.command == "pip install --only-binary :all: 'pytest>=7' hypothesis"
    go = setup_from({"go.mod"}, {"go.mod": "module x\nrequire golang.org/x/text v0.3.0\n"})
    assert go and go.command == "go mod download"
    both = setup_from({"requirements.txt", "package.json"}, {
        "requirements.txt": "six\n", "package.json": '{"dependencies": {"left-pad": "1"}}'})
    assert both and both.command == ("pip install --only-binary :all: -r requirements.txt && "
                                     "npm install --ignore-scripts --no-audit --no-fund")


def commit(co: Checkout, files: dict[str, str], message: str) -> str:
    for path, text in files.items():
        (co.work_tree / path).parent.mkdir(parents=True, exist_ok=True)
        (co.work_tree / path).write_text(text)
    git = ["git", f"--git-dir={co.git_dir}", f"--work-tree={co.work_tree}"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm",
                    message], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


async def test_the_build_files_a_branch_changed_are_found_at_any_depth(tmp_path: Path) -> None:
    """What keeps an iteration's setup off the network: manifests by name at any depth, the
    files the default branch's requirements include, and what the setup command names."""
    co = Checkout(tmp_path / "git", tmp_path / "ws")
    co.work_tree.mkdir()
    subprocess.run(["git", "init", "-q", f"--separate-git-dir={co.git_dir}",
                    str(co.work_tree)], check=True)
    (co.work_tree / ".git").unlink()
    base = commit(co, {"app.py": "x = 1\n", "requirements.txt": "-r deps/base.in\n",
                       "deps/base.in": "six\n", "scripts/setup.sh": "pip install six\n"},
                   "default branch")
    assert await build_files_changed(co, base, "bash scripts/setup.sh") == []
    commit(co, {"app.py": "x = 2\n", "docs/guide.md": "hi\n"}, "the agent's code")
    assert await build_files_changed(co, base, "bash scripts/setup.sh") == []
    commit(co, {"deps/base.in": "evil\n", "scripts/setup.sh": "curl x\n",
                "vendor/lib/package.json": "{}\n", "tools/build.mk": "x:\n",
                ".npmrc": "git=./x\n"}, "the agent's build files")
    assert await build_files_changed(co, base, "bash scripts/setup.sh") == [
        ".npmrc", "deps/base.in", "scripts/setup.sh", "tools/build.mk",
        "vendor/lib/package.json"]


pytestmark = pytest.mark.podman


async def test_declared_dependencies_are_installed_without_any_configuration(
        tmp_path: Path) -> None:
    repo_files = {**BUGGY_REPO, "requirements.txt": "tinydep\n",
                  "test_dep.py": "import tinydep\n\n\ndef test_dep():\n"
                                 "    assert tinydep.ANSWER == 42\n"}
    built = wheel(tmp_path, "tinydep", "ANSWER = 42\n")
    with package_index(tmp_path / "index", [built]) as index:
        async with stack(tmp_path, FIX_SCRIPT, pip_index_url=index,
                         egress_allow_private=True) as s:
            s.sim.add_repo(REPO, repo_files)  # no .github/handoff.yml at all
            job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
            assert job.state == "succeeded", job.reason
            pr = next(i for i in s.sim.get_repo(REPO).issues.values() if i.pull)
            assert "Setup: `pip install --only-binary :all: -r requirements.txt`" in pr.body
            assert "`requirements.txt`" in pr.body and "It failed" not in pr.body
            # tinydep imported in the baseline: test_dep passed before and after the change.
            assert "1 passed, 1 failed" in job.result.tests.before, job.result
            assert "2 passed" in job.result.tests.after, job.result


async def test_what_the_setup_leaves_in_the_work_tree_is_not_pushed(tmp_path: Path) -> None:
    config = ("test_command: python3 -m pytest -q -p no:cacheprovider\n"
              "setup_command: mkdir -p build/cache pkg.egg-info && touch build/cache/x "
              "pkg.egg-info/PKG-INFO\n")
    async with stack(tmp_path, FIX_SCRIPT) as s:
        s.sim.add_repo(REPO, {**BUGGY_REPO, ".github/handoff.yml": config})
        job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
        assert job.state == "succeeded", job.reason
        repo = s.sim.get_repo(REPO)
        pr = next(i for i in repo.issues.values() if i.pull)
        assert pr.pull is not None
        pushed = subprocess.run(["git", "ls-tree", "-r", "--name-only", pr.pull.head],
                                cwd=repo.path, capture_output=True, text=True).stdout.split()
        assert "calc.py" in pushed
        assert not [p for p in pushed if p.startswith(("build/", "pkg.egg-info"))], pushed
