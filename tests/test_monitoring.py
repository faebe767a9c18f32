"""What deploy/ gives an operator to watch Handoff: the Prometheus alert rules (valid and
unit-tested with promtool) and the Grafana dashboard (valid PromQL), both about metrics
Handoff really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bot import metrics

DEPLOY = Path(__file__).parent.parent / "deploy"
promtool = pytest.mark.skipif(not shutil.which("promtool"),
                              reason="promtool (Debian's prometheus) not installed")


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]
    return {rule["alert"]: rule["expr"] for rule in rules["rules"]}


def panel_exprs() -> dict[str, str]:
    dashboard = json.loads((DEPLOY / "grafana" / "handoff.json").read_text())
    return {f"{panel['title']} ({target['refId']})": target["expr"]
            for panel in dashboard["panels"] for target in panel["targets"]}


@promtool
def test_alert_rules_check_and_their_unit_tests_pass() -> None:
    checked = run(DEPLOY / "prometheus", "check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(DEPLOY / "prometheus", "test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query as a recording rule's expression."""
    exprs = panel_exprs()
    assert len(exprs) >= 10
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"handoff:panel_{i}", "expr": expr} for i, expr in enumerate(exprs.values())]}]}
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    checked = run(tmp_path, "check", "rules", "panels.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("source", [alert_exprs, panel_exprs])
def test_every_query_reads_a_metric_handoff_exports(source: object) -> None:
    exported = {m.name for m in metrics.REGISTRY.collect()}
    assert "handoff_queue_depth" in exported
    for name, expr in source().items():  # type: ignore[operator]
        for metric in set(re.findall(r"\bhandoff_[a-z_]+", expr)):
            base = re.sub(r"_(bucket|sum|count|total)$", "", metric)
            assert base in exported, f"{name} reads {metric}, which Handoff never exports"
