"""The Prometheus alert rules in deploy/prometheus: valid, unit-tested with promtool, and
about metrics Handoff really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bot import metrics

RULES = Path(__file__).parent.parent / "deploy" / "prometheus"
promtool = pytest.mark.skipif(not shutil.which("promtool"),
                              reason="promtool (Debian's prometheus) not installed")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=RULES, capture_output=True, text=True,
                          timeout=120)


@promtool
def test_rules_check_and_their_unit_tests_pass() -> None:
    checked = run("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_rule_reads_a_metric_handoff_exports() -> None:
    exported = {m.name for m in metrics.REGISTRY.collect()}
    assert "handoff_queue_depth" in exported
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"][0]["rules"]
    assert len(rules) >= 6
    for rule in rules:
        for name in set(re.findall(r"\bhandoff_[a-z_]+", rule["expr"])):
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)
            assert base in exported, f"{rule['alert']} reads {name}, which Handoff never exports"
