"""The README's `.github/handoff.yml` example works as written with the default image: it is
valid, and a job on a project like the one it describes installs the project (`pip install
-e .`, its build dependencies served by a package mirror on 127.0.0.1), runs its tests and
opens a draft PR. Only `image:` is left out: no registry is reachable here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT
from helpers import package_index

from bot.config import PROMPTS
from bot.executor.repo_config import parse_repo_config
from bot.reporter.templates import Templates
from devkit.stack import stack

README = Path(__file__).parent.parent / "README.md"
WHEELS = Path("/usr/share/python-wheels")  # Debian's setuptools and wheel (python3-pip-whl)
REPO = "acme/calc"


def readme_example() -> str:
    section = README.read_text().split("## Per-repository settings", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match, "the README's per-repository section has a yaml example"
    return match.group(1)


def test_the_readme_example_is_valid() -> None:
    config = parse_repo_config(readme_example(), Templates(PROMPTS).names())
    assert config.setup_command and config.test_command and config.draft is True


def build_tools() -> list[Path]:
    """Debian's setuptools and wheel wheels: what `pip install -e .` builds with."""
    found = [sorted(WHEELS.glob(f"{name}-*.whl")) for name in ("setuptools", "wheel")]
    if not all(found):
        pytest.skip(f"no setuptools or wheel wheel in {WHEELS} (apt-get install "
                    "python3-setuptools-whl python3-wheel-whl)")
    return [f[-1] for f in found]


pytestmark = pytest.mark.podman


async def test_the_readme_example_runs_a_job_with_the_default_image(tmp_path: Path) -> None:
    example = yaml.safe_load(readme_example())
    example.pop("image")  # the one line that needs a registry
    project = {**BUGGY_REPO, ".github/handoff.yml": yaml.safe_dump(example),
               "pyproject.toml": "[build-system]\nrequires = ['setuptools']\n"
                                 "build-backend = 'setuptools.build_meta'\n\n"
                                 "[project]\nname = 'calc'\nversion = '1.0'\n\n"
                                 "[tool.setuptools]\npy-modules = ['calc']\n"}
    with package_index(tmp_path / "mirror", build_tools()) as index:
        async with stack(tmp_path, FIX_SCRIPT, pip_index_url=index,
                         egress_allow_private=True) as s:
            s.sim.add_repo(REPO, project)
            job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
            assert job.state == "succeeded", job.reason
            assert "setup_warning" not in job.result
            assert "pass" in job.result.tests.after and "1 passed" in job.result.tests.after
            pr = next(i for i in s.sim.get_repo(REPO).issues.values() if i.pull)
            assert pr.pull is not None and pr.pull.draft  # `draft: true`
            assert f"Setup: `{example['setup_command']}`" in pr.body
            assert f"`{example['test_command']}`" in pr.body
