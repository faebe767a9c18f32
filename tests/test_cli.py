"""The `handoff` command as a person runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import WEBHOOKS, unused_port

from bot.cli import open_store
from bot.config import Settings

ROOT = Path(__file__).parent.parent


def handoff(tmp_path: Path, *args: str, module: str = "bot.cli",
            **env: str) -> subprocess.CompletedProcess[str]:
    """``handoff ARGS`` (or, with ``module="devkit.cli"``, ``handoff-dev ARGS``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60,
                          env={**clean, "HANDOFF_DATA_DIR": str(tmp_path / "data"),
                               "PYTHONPATH": str(ROOT), **env})


def test_doctor_names_what_is_missing(tmp_path: Path) -> None:
    result = handoff(tmp_path, "doctor", HANDOFF_MODEL_BASE_URL="http://127.0.0.1:9/v1",
                     HANDOFF_SANDBOX="bubblewrap")
    assert result.returncode == 1
    assert "[FAIL] app id" in result.stdout and "HANDOFF_APP_ID" in result.stdout
    assert "[ok  ] database" in result.stdout
    assert "[FAIL] model endpoint" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("verdict: not ready")


def test_replay_and_jobs(tmp_path: Path) -> None:
    payload = WEBHOOKS / "issues/labeled.json"  # GitHub's example: the label is "bug"
    ignored = handoff(tmp_path, "replay", str(payload), "--event", "issues")
    assert "Ignore(reason=\"label 'bug' is not the trigger label\")" in ignored.stdout
    decided = handoff(tmp_path, "replay", str(payload), "--event", "issues", "--record",
                      HANDOFF_TRIGGER_LABEL="bug")
    assert decided.returncode == 0, decided.stderr
    assert "StartJob(kind='implement'" in decided.stdout and "queued implement job" in \
        decided.stdout
    listed = handoff(tmp_path, "jobs", HANDOFF_TRIGGER_LABEL="bug")
    assert "queued" in listed.stdout and "Codertocat/Hello-World#1" in listed.stdout


def test_replay_of_a_file_that_is_not_a_payload(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"action": "labeled", ')
    result = handoff(tmp_path, "replay", str(bad), "--event", "issues")
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_version_is_the_packages(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = handoff(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"handoff {version('handoff')}"


def test_jobs_on_a_new_install(tmp_path: Path) -> None:
    assert handoff(tmp_path, "jobs").stdout.strip() == "no jobs yet"


@pytest.mark.podman
def test_demo_opens_a_pull_request(tmp_path: Path) -> None:
    """Typed by hand in a shell that names no containers.conf: Handoff uses its own."""
    result = handoff(tmp_path, "demo", "--dir", str(tmp_path / "demo"), module="devkit.cli",
                     CONTAINERS_CONF="", HANDOFF_LOG_LEVEL="WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job 1: succeeded" in result.stdout
    assert "Closes #1" in result.stdout and "[x] add(2, 3) returns 5" in result.stdout
    assert "| after (head" in result.stdout and "pass — 1 passed" in result.stdout


async def test_a_database_that_never_answers_ends_in_one_clear_line(tmp_path: Path) -> None:
    """Waited for (deploy/compose.yml starts it beside Handoff: tests/test_compose.py shows
    the wait), then the process exits saying where and why, the password left out."""
    url = f"postgresql+asyncpg://handoff:hunter2@127.0.0.1:{unused_port()}/handoff"
    with pytest.raises(SystemExit) as ended:
        await open_store(Settings(database_url=url, data_dir=tmp_path), wait=0)
    assert str(ended.value).startswith(
        "the database at postgresql+asyncpg://handoff:***@127.0.0.1:")
    assert "did not answer in 0 s: ConnectionRefusedError" in str(ended.value)
    assert "hunter2" not in str(ended.value)


def test_validate_names_every_error(tmp_path: Path) -> None:
    config = tmp_path / "handoff.yml"
    config.write_text("test_command: 3\nbudget: {max_steps: 0, colour: red}\n"
                      "network: {allow: ghcr.io}\n")
    result = handoff(tmp_path, "validate", str(config))
    assert result.returncode == 1
    for field in ("`test_command`", "`budget.max_steps`", "`budget.colour`", "`network.allow`"):
        assert field in result.stderr
    config.write_text("templates: {chore: no-such-template}\n")
    assert "no-such-template" in handoff(tmp_path, "validate", str(config)).stderr
    config.write_text("test_command: make check\nnetwork: {allow: [ghcr.io]}\n")
    ok = handoff(tmp_path, "validate", str(config))
    assert ok.returncode == 0 and ok.stdout.strip() == f"{config}: valid"
    assert handoff(tmp_path, "validate", str(tmp_path / "absent.yml")).returncode == 2


def test_published_schema_is_current_and_checks_what_validate_checks(tmp_path: Path) -> None:
    """deploy/handoff.schema.json is what `handoff validate --schema` prints (regenerate it
    with that command), and a JSON Schema validator agrees with Handoff on examples."""
    import json

    import jsonschema
    import yaml

    published = (ROOT / "deploy" / "handoff.schema.json").read_text()
    assert handoff(tmp_path, "validate", "--schema").stdout == published
    validator = jsonschema.Draft202012Validator(json.loads(published))
    good = yaml.safe_load("test_command: make check\nbudget: {max_steps: 30}\ndraft: true\n")
    bad = yaml.safe_load("budget: {max_steps: 0}\nsurprise: 1\n")
    assert not list(validator.iter_errors(good))
    assert len(list(validator.iter_errors(bad))) == 2
