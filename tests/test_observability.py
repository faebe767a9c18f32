"""What an operator sees: JSON log lines with the delivery, job, repo and stage, a refused
signature logged (once a minute, not once a request), and ``GET /metrics`` in Prometheus'
format, parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT, TEST_COMMAND
from helpers import SECRET, headers, json_log, labeled, name_their_ids
from prometheus_client.parser import text_string_to_metric_families

from bot import logs, metrics_port
from bot.server import running
from devkit.stack import stack

ROOT = Path(__file__).parent.parent


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def test_serve_logs_json_and_counts_deliveries(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env.update(PYTHONPATH=str(ROOT), HANDOFF_LOG_FORMAT="json", HANDOFF_PORT="0",
               HANDOFF_METRICS_PORT="0",
               HANDOFF_WEBHOOK_SECRET=SECRET.decode(), HANDOFF_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--no-worker"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        started: list[str] = []  # the start-up lines, JSON like every other line
        while len(found := logs.listeners(started)) < 2:
            started.append(proc.stderr.readline())
            assert started[-1], started
        base = found["webhook"]
        assert found["metrics"].startswith("http://127.0.0.1:"), found  # loopback only
        metrics_url = f"{found['metrics']}/metrics"
        with httpx.Client(base_url=base, timeout=10) as client:
            body = json.dumps(labeled("agent")).encode()
            for _ in range(5):  # a stranger guessing, or a wrong secret
                forged = headers("issues", body, secret=b"not-the-secret")
                assert client.post("/webhook", content=body, headers=forged).status_code == 401
            signed = headers("issues", body)
            assert client.post("/webhook", content=body, headers=signed).status_code == 202
            # GitHub redelivers it: acknowledged, acted on once
            assert client.post("/webhook", content=body, headers=signed).status_code == 200
            assert client.get("/metrics").status_code == 404  # not on the webhook's port
            scrape = client.get(metrics_url)
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        got = samples(scrape.text)
        assert value(got, "handoff_deliveries_total", event="unverified",
                     outcome="bad-signature") == 5
        assert value(got, "handoff_deliveries_total", event="issues", outcome="accepted") == 1
        assert value(got, "handoff_deliveries_total", event="issues", outcome="duplicate") == 1
        assert value(got, "handoff_webhook_seconds_count") == 7
        assert value(got, "handoff_jobs", state="queued", category="") == 1
        assert value(got, "handoff_queue_depth") == 1
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    lines = [json.loads(raw) for raw in started + err.splitlines() if raw.strip()]  # all JSON
    webhook = next(x for x in lines if x["message"].startswith("webhook listening on"))
    assert webhook["listener"] == "webhook" and webhook["address"] == "127.0.0.1"
    assert f"http://127.0.0.1:{webhook['port']}" == base and webhook["logger"] == "handoff.cli"
    refused = [x for x in lines if "refused a delivery" in x["message"]]
    assert len(refused) == 1, lines  # five refusals, one line: a flood cannot fill the disk
    assert refused[0]["level"] == "WARNING" and "127.0.0.1" in refused[0]["message"]
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert name_their_ids(lines) == []  # a line about a delivery carries its id


@pytest.mark.podman
@pytest.mark.skipif(not shutil.which("podman"), reason="needs Podman")
async def test_a_job_in_logs_and_metrics(tmp_path: Path) -> None:
    with json_log() as lines:
        async with stack(tmp_path, FIX_SCRIPT) as s:
            s.sim.add_repo("acme/calc", {**BUGGY_REPO,
                                         ".github/handoff.yml": f"test_command: {TEST_COMMAND}\n"})
            number = s.sim.open_issue("acme/calc", "add() is wrong", "fix add", "acme").number
            s.sim.label_issue("acme/calc", number, "agent", "acme")
            job = await s.wait_job(lambda j: j.issue_number == number)
            assert job.state == "succeeded", job.reason
            async with running(metrics_port.app(s.store)) as url, httpx.AsyncClient() as client:
                scrape = (await client.get(f"{url}/metrics")).text
    assert name_their_ids(lines) == []  # every line about a job or delivery carries its id
    mine = [x for x in lines if x.get("job") == job.id]
    assert mine and all(x["repo"] == "acme/calc" for x in mine)
    assert {"preparing", "agent", "testing", "pushing", "done"} <= \
        {x.get("stage") for x in mine}
    got = samples(scrape)
    assert value(got, "handoff_jobs", state="succeeded", category="") >= 1
    assert value(got, "handoff_job_reports", state="reported") >= 1  # what `handoff jobs` names
    assert value(got, "handoff_job_reports", state="unreportable") == 0
    for stage in ("agent", "tests after", "pr"):
        assert value(got, "handoff_job_stage_seconds_count", stage=stage) >= 1
    assert value(got, "handoff_model_tokens_total", direction="input") > 0
    assert value(got, "handoff_model_cost_dollars_total") > 0
    assert value(got, "handoff_github_api_calls_total", method="POST", status="201") > 0
    assert value(got, "handoff_github_rate_limit_remaining", resource="core") > 0
    assert ("handoff_sandboxes_running", frozenset({("backend", "podman")})) in got
