"""An external agent CLI in the sandbox reaches its model through the egress allowlist, and
nothing it prints of its key leaves Handoff (PR body, comments, transcript)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from agent_fixtures import CALC_WITH_TESTS

from devkit.stack import MODEL_KEY, stack

REPO = "acme/calc"
TOKEN = "plain-canary-token-7f3a9c21e"
# A stand-in for Claude Code, Codex CLI or aider: it calls its model over HTTP (through the
# proxy variables, as such CLIs do), fixes the bug, and prints a secret as a careless CLI might:
# one shaped like no known token, so only the configured value can catch it.
FAKE_CLI = """
import json, os, urllib.request
base = os.environ["FAKE_MODEL_URL"]
req = urllib.request.Request(base + "/chat/completions", method="POST",
    data=json.dumps({"model": "scripted-1",
                     "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"Authorization": "Bearer " + os.environ["FAKE_AGENT_KEY"],
             "Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(req, timeout=20))
text = open("calc.py").read().replace("return a - b", "return a + b")
open("calc.py", "w").write(text)
print("model answered:", answer["choices"][0]["finish_reason"])
print("debug: using token", os.environ["FAKE_AGENT_TOKEN"])
print("Fixed add(): it subtracted.")
"""

pytestmark = pytest.mark.podman


async def test_external_cli_reaches_its_model_and_its_key_is_redacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AGENT_KEY", MODEL_KEY)
    monkeypatch.setenv("FAKE_AGENT_TOKEN", TOKEN)
    reply = [{"text": "ok", "usage": {"input": 10, "output": 2}}]
    async with stack(tmp_path, reply, agent_command=f"python3 -c {shlex.quote(FAKE_CLI)}",
                     agent_env=["FAKE_AGENT_KEY", "FAKE_AGENT_TOKEN", "FAKE_MODEL_URL"],
                     egress_allow_private=True) as s:
        monkeypatch.setenv("FAKE_MODEL_URL", s.settings.model_base_url)  # read at each run
        s.sim.add_repo(REPO, CALC_WITH_TESTS)
        job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
        assert job.state == "succeeded", job.reason
        assert len(s.model.requests) == 1  # the CLI's own call, from inside the sandbox
        repo = s.sim.get_repo(REPO)
        pr = next(i for i in repo.issues.values() if i.pull)
        assert "model answered: stop" in pr.body and "[redacted]" in pr.body
        texts = json.dumps([pr.body, *(c.body for i in repo.issues.values()
                                       for c in i.comments)])
        assert MODEL_KEY not in texts and TOKEN not in texts
        transcript = Path(job.result.agent.transcript).read_text()
        assert "model answered" in transcript and TOKEN not in transcript
