"""The job's relay on the worker: an agent CLI in the sandbox holds only the job's token; the
relay answers that token alone, adds the real model key in the header the token came in (both
wire formats), passes streamed answers through and is gone with the job. End to end, Claude
Code's own commands search the sandbox (env, files, /proc) for the key and find only the
token, while the job still costs what the CLI reports."""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path

import httpx
import pytest
from agent_fixtures import CALC_WITH_TESTS, TEST_COMMAND
from test_agent_presets import (
    AGENTS_IMAGE,
    COST,
    FIX,
    SETTINGS,
    SUMMARY,
    TOKENS,
    image_missing,
)

from bot.executor.agent.relay import JobRelay, Upstreams
from bot.server import running
from devkit.scripted import ScriptedModel
from devkit.stack import MODEL_KEY, stack

ANSWER = {"text": "hello from upstream", "usage": {"input": 10, "output": 3}}
ANTHROPIC = {"model": "claude-sonnet-4-5", "max_tokens": 50,
             "messages": [{"role": "user", "content": "hi"}]}


async def test_the_relay_adds_the_key_only_for_the_jobs_token() -> None:
    model = ScriptedModel([ANSWER], repeat_last=True, api_key=MODEL_KEY)
    async with running(model.app) as upstream, JobRelay(Upstreams(upstream, MODEL_KEY)) as relay:
        async with httpx.AsyncClient(base_url=relay.endpoint(f"{upstream}/v1")) as http:
            # Anthropic's header, streamed: the events pass through as the model sent them.
            async with http.stream("POST", "/messages", json={**ANTHROPIC, "stream": True},
                                   headers={"x-api-key": relay.token,
                                            "anthropic-version": "2023-06-01"}) as streamed:
                events = [line async for line in streamed.aiter_lines()
                          if line.startswith("event: ")]
            assert streamed.status_code == 200
            assert streamed.headers["content-type"].startswith("text/event-stream")
            assert events[0] == "event: message_start" and "event: message_stop" in events
            # OpenAI's header, whole.
            chat = await http.post("/chat/completions", headers={
                "authorization": f"Bearer {relay.token}"}, json={
                "model": "scripted-1", "messages": [{"role": "user", "content": "hi"}]})
            assert chat.status_code == 200, chat.text
            assert chat.json()["choices"][0]["message"]["content"] == "hello from upstream"
            asked = len(model.requests)
            for headers in ({}, {"x-api-key": "sk-guess"}, {"authorization": "Bearer x"},
                            {"authorization": f"Bearer {MODEL_KEY}"}):
                refused = await http.post("/chat/completions", headers=headers, json={})
                assert refused.status_code == 401 and MODEL_KEY not in refused.text
            other = await http.get("/files", headers={"authorization": f"Bearer {relay.token}"})
            assert other.status_code == 403  # the model APIs only, not the provider's others
            assert len(model.requests) == asked  # none of them reached the model
        url, token = relay.url, relay.token
    async with httpx.AsyncClient() as http:  # the job is over: the token opens nothing
        with pytest.raises(httpx.ConnectError):
            await http.post(f"{url}/v1/chat/completions", json={},
                            headers={"authorization": f"Bearer {token}"})


# Run by Claude Code's Bash tool in the sandbox: looks for the model key (given encoded, so
# no command line holds it) in the environment, every process's environ and cmdline, and
# every file; the job's token, in the same places, shows the search can find what is there.
SCAN = f"""
import base64, os
key = base64.b64decode({base64.b64encode(MODEL_KEY.encode()).decode()!r})
token = os.environ["ANTHROPIC_API_KEY"].encode()
found = {{"key": [], "token": []}}
def look(where, data):
    for name, value in (("key", key), ("token", token)):
        if value in data:
            found[name].append(where)
look("env", repr(dict(os.environ)).encode())
for pid in filter(str.isdigit, os.listdir("/proc")):
    for part in ("environ", "cmdline"):
        try:
            look(f"/proc/{{pid}}/{{part}}", open(f"/proc/{{pid}}/{{part}}", "rb").read())
        except OSError:
            pass
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in files:
        path = os.path.join(root, name)
        try:
            if not os.path.islink(path) and os.path.getsize(path) < 20_000_000:
                look(path, open(path, "rb").read())
        except OSError:
            pass
print("key in:", found["key"][:5] or "nowhere", "| token in env:", "env" in found["token"],
      "| token in /proc:", any(w.startswith("/proc/") for w in found["token"]))
"""
SCAN_COMMAND = f"python3 -c {shlex.quote(SCAN)}"


async def test_the_key_is_nowhere_in_the_sandbox_and_the_cli_still_works(
        tmp_path: Path) -> None:
    if reason := image_missing():
        pytest.skip(reason)
    usage = {"input": 1200, "output": 40}
    script = [
        {"tool": "Bash", "args": {"command": SCAN_COMMAND, "description": "Look for the key"},
         "usage": usage},
        {"tool": "Bash", "args": {"command": f"{FIX} && {TEST_COMMAND}",
                                  "description": "Fix add() and run the tests"},
         "usage": {"input": 1300, "output": 12}},
        {"text": SUMMARY, "usage": {"input": 0, "output": 0}}]
    # No private addresses for the sandbox: the model is on this machine's loopback, which
    # only the relay (on the worker) reaches.
    async with stack(tmp_path, script, agent="claude-code", agent_image=AGENTS_IMAGE,
                     egress_allow_private=False, sandbox_memory_mb=2048,
                     max_wall_seconds=300, **SETTINGS["claude-code"]) as s:
        s.sim.add_repo("acme/calc", CALC_WITH_TESTS)
        job = await s.handed_over("acme/calc", "add() subtracts", "Fix add().")
        assert job.state == "succeeded", job.reason
        asked = json.dumps(s.model.requests)
        assert "key in: nowhere | token in env: True | token in /proc: True" in asked, \
            asked[-4000:]
        pr = next(i for i in s.sim.get_repo("acme/calc").issues.values() if i.pull)
        assert f"{TOKENS} · {COST}" in pr.body, pr.body  # as Claude Code counted it
        assert "Network access refused" not in pr.body, pr.body
