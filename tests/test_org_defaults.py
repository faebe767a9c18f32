"""Organisation defaults for `.github/handoff.yml` (as Probot's `_extends`): the owner's
`.github` repository gives settings its repositories build on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT

from bot.executor.repo_config import extends_target, parse_repo_config, with_defaults
from devkit.stack import stack

ORG_COMMAND = "python3 -m pytest -q -p no:cacheprovider test_calc.py"
ORG_SETTINGS = (f"test_command: {ORG_COMMAND}\ndraft: true\n"
                "budget: {max_steps: 20, max_cost_usd: 1}\n")


def test_which_settings_a_file_builds_on() -> None:
    assert extends_target(None) == (".github", False)  # no file: the owner's, if any
    assert extends_target("draft: true\n") is None  # a file without _extends stands alone
    assert extends_target("_extends: .github\ndraft: true\n") == (".github", True)
    assert extends_target("_extends: acme/shared-settings\n") == ("acme/shared-settings", True)


def test_the_repository_s_own_values_win_key_by_key() -> None:
    merged = yaml.safe_load(with_defaults("_extends: .github\ndraft: false\n"
                                          "budget: {max_steps: 50}\n", ORG_SETTINGS))
    assert merged == {"test_command": ORG_COMMAND, "draft": False,
                      "budget": {"max_steps": 50, "max_cost_usd": 1}}
    config = parse_repo_config(yaml.safe_dump(merged), ["implement"])
    assert config.budget.max_cost_usd == 1 and config.budget.max_steps == 50


@pytest.mark.podman
async def test_repositories_take_their_organisation_s_defaults(tmp_path: Path) -> None:
    async with stack(tmp_path, FIX_SCRIPT + FIX_SCRIPT) as s:
        s.sim.add_repo("acme/.github", {".github/handoff.yml": ORG_SETTINGS,
                                        "README.md": "# acme\n"})
        s.sim.add_repo("acme/calc", BUGGY_REPO)  # no settings of its own
        s.sim.add_repo("acme/web", {**BUGGY_REPO, ".github/handoff.yml":
                                    "_extends: .github\ndraft: false\n"})
        s.sim.add_repo("acme/api", {**BUGGY_REPO, ".github/handoff.yml":
                                    "_extends: settings-repo\n"})

        plain = await s.handed_over("acme/calc", "add() is wrong", "fix add")
        assert plain.state == "succeeded", plain.reason
        assert plain.result.tests.command == ORG_COMMAND
        pulls = s.sim.get_repo("acme/calc").issues
        assert [i.pull.draft for i in pulls.values() if i.pull] == [True]

        extended = await s.handed_over("acme/web", "add() is wrong", "fix add")
        assert extended.state == "succeeded", extended.reason
        assert extended.result.tests.command == ORG_COMMAND
        pulls = s.sim.get_repo("acme/web").issues
        assert [i.pull.draft for i in pulls.values() if i.pull] == [False]

        asked = len(s.model.requests)
        missing = await s.handed_over("acme/api", "add() is wrong", "fix add")
        assert (missing.state, missing.category) == ("failed", "config-error")
        assert "`_extends: settings-repo`" in missing.reason
        assert len(s.model.requests) == asked
        said = s.sim.get_repo("acme/api").issues[missing.issue_number].comments[-1].body
        assert "settings-repo" in said
