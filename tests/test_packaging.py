"""`pip install .` (not editable) gives a Handoff that works: a wheel, a fresh venv, a job.

The product's wheel holds the product only; the dev kit is its own wheel (devkit/pyproject.toml),
installed beside it here to run the demo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the source, installed into a fresh venv; its bin dir."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    for package in ("bot", "handlers", "devkit", "prompts"):
        shutil.copytree(ROOT / package, src / package, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # As `pip install .` builds it: setuptools from pyproject's build-system, isolated.
    for project in (src, src / "devkit"):
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--disable-pip-version-check", "-w", str(tmp / "dist"), str(project)],
                       check=True, capture_output=True, cwd=tmp)
    wheel = next((tmp / "dist").glob("handoff-[0-9]*.whl"))
    kit = next((tmp / "dist").glob("handoff_devkit-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # The dependencies come from this interpreter's site-packages (a .pth adds the folder but
    # not the .pth files in it, so an editable Handoff there stays out); Handoff from the wheel.
    site = Path(subprocess.run(
        [str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
         "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps",
                    "--disable-pip-version-check", str(wheel), str(kit)], check=True,
                   capture_output=True)
    return venv / "bin"


def test_the_product_wheel_holds_no_development_kit(installed: Path) -> None:
    wheel = next((installed.parent.parent / "dist").glob("handoff-[0-9]*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("devkit/")]
    assert "bot/prompts/default.md" in names and "handlers/__init__.py" in names
    requires = next(n for n in names if n.endswith("METADATA"))
    metadata = zipfile.ZipFile(wheel).read(requires).decode()
    runtime = [line for line in metadata.splitlines()
               if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [line for line in runtime if "jsonschema" in line or "pyjwt" in line.lower()]
    assert "handoff-dev" not in zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()


def run(bindir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HANDOFF_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**env, "PATH": f"{bindir}:{env['PATH']}"})


def test_installed_package_finds_its_templates(installed: Path, tmp_path: Path) -> None:
    probe = ("import bot, sys\nfrom bot.config import Settings\n"
             "from bot.reporter.templates import Templates\n"
             "s = Settings()\nprint(bot.__file__)\nprint(s.prompts_dir)\n"
             "print(' '.join(Templates(s.prompts_dir).names()))\n")
    result = run(installed, tmp_path, str(installed / "python"), "-c", probe)
    assert result.returncode == 0, result.stderr
    module, prompts, names = result.stdout.splitlines()
    venv = str(installed.parent)
    assert module.startswith(venv) and prompts.startswith(venv)  # not this checkout
    assert {"bug", "feature", "docs", "default", "retry", "review", "summary"} <= \
        set(names.split())


def test_installed_package_migrates_a_new_database(installed: Path, tmp_path: Path) -> None:
    """The Alembic environment and its revisions ship in the wheel: no checkout, no
    alembic.ini."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HANDOFF_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(installed / "handoff"), "migrate"], capture_output=True, text=True, cwd=tmp_path,
        timeout=120, env={**env, "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/h.db",
                          "HANDOFF_DATA_DIR": str(tmp_path)})
    from bot.jobs.store.migrations import head

    assert result.returncode == 0, result.stderr
    assert f"schema is at revision {head()}" in result.stdout
    assert "Running upgrade  -> 0001, The baseline" in result.stderr


@pytest.mark.podman
def test_installed_package_runs_a_job(installed: Path, tmp_path: Path) -> None:
    if shutil.which("podman") is None:
        pytest.skip("needs Podman")
    result = run(installed, tmp_path, str(installed / "handoff-dev"), "demo", "--dir",
                 str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout and "--- pull request #" in result.stdout
