"""The built-in agent with a scripted model server and a real sandbox."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT, TEST_COMMAND

from bot.executor.agent.loop import Agent, AgentResult
from bot.executor.agent.models import make_model
from bot.executor.agent.transcript import Transcript
from bot.executor.sandbox import Backend, Limits
from bot.executor.sandbox.bubblewrap import BubblewrapBackend
from bot.executor.sandbox.container import ContainerBackend
from bot.github.retry import RetryPolicy
from bot.jobs.spend import Budget
from bot.server import running
from devkit.scripted import ScriptedModel

API_KEY = "sk-test-canary-4f9c2a7d1e8b6c3a"
FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2, max_wait=5)


def backend() -> Backend:
    limits = Limits(memory_mb=512, pids=128, timeout=60, output_cap=16384)
    image = os.environ.get("HANDOFF_SANDBOX_IMAGE", "handoff-sandbox:dev")
    if shutil.which("podman") and subprocess.run(["podman", "image", "exists", image]
                                                 ).returncode == 0:
        return ContainerBackend("podman", image, limits)
    if shutil.which("bwrap"):
        return BubblewrapBackend(limits)
    pytest.skip("no sandbox backend available")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    for name, content in BUGGY_REPO.items():
        (ws / name).write_text(content)
    return ws


async def run_agent(script: list[dict[str, Any]], workspace: Path, tmp_path: Path,
                    provider: str = "openai", budget: Budget | None = None,
                    repeat_last: bool = False) -> tuple[AgentResult, ScriptedModel, Transcript]:
    server = ScriptedModel(script, repeat_last=repeat_last, api_key=API_KEY)
    async with running(server.app) as url:
        base = f"{url}/v1" if provider == "openai" else url
        model = make_model(provider, base, "scripted-1", API_KEY, timeout=10, policy=FAST)
        transcript = Transcript(tmp_path / "transcript.jsonl", secrets=(API_KEY,))
        agent = Agent(model, budget or Budget(price_in=3.0, price_out=15.0), transcript,
                      command_timeout=60)
        box = await backend().start("agent-test", workspace)
        try:
            result = await agent.run("Fix add() so test_calc passes.", box)
            tests = await box.exec(TEST_COMMAND)
        finally:
            await box.close()
    result.steps_log.append({"tests_after": tests.exit_code})
    return result, server, transcript


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_agent_fixes_the_bug(provider: str, workspace: Path, tmp_path: Path) -> None:
    result, server, transcript = await run_agent(FIX_SCRIPT, workspace, tmp_path, provider)
    assert result.finished and "now adds" in result.summary
    assert (workspace / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert result.steps_log[-1]["tests_after"] == 0
    assert result.spend.steps == 5
    assert result.spend.input_tokens == 6400 and result.spend.output_tokens == 210
    assert result.spend.cost_usd == pytest.approx((6400 * 3 + 210 * 15) / 1e6)
    kinds = [e["kind"] for e in transcript.read()]
    assert kinds.count("model") == 5 and kinds.count("tool") == 5 and kinds[-1] == "finish"
    first_test = next(e for e in transcript.read() if e["kind"] == "tool")
    assert "1 failed" in first_test["result"]
    # the model saw the tool results: the second request carries the first one's output
    assert "1 failed" in json.dumps(server.requests[1])


@pytest.mark.parametrize("bad,expected", [
    ({"path": "calc.py", "old_text": "return a * b", "new_text": "x"}, "not found"),
    ({"path": "calc.py", "old_text": "a", "new_text": "x"}, "occurs"),
    ({"path": "nope.py", "old_text": "a", "new_text": "b"}, "does not exist"),
    ({"path": "calc.py", "old_text": "return a - b", "new_text": "return a - b"},
     "are the same, so calc.py was not changed"),
])
async def test_edit_errors_go_back_to_the_model(bad: dict[str, str], expected: str,
                                                workspace: Path, tmp_path: Path) -> None:
    script = [{"tool": "edit", "args": bad}, *FIX_SCRIPT[2:]]
    result, server, transcript = await run_agent(script, workspace, tmp_path)
    assert result.finished
    tool = next(e for e in transcript.read() if e["kind"] == "tool")
    assert not tool["ok"] and expected in tool["result"]
    assert expected in json.dumps(server.requests[1])


async def test_429_is_retried_after_the_delay(workspace: Path, tmp_path: Path) -> None:
    script = [{"status": 429, "retry_after": 1}, *FIX_SCRIPT]
    result, server, _ = await run_agent(script, workspace, tmp_path)
    assert result.finished and len(server.requests) == 6


async def test_500_beyond_bound_fails_clearly(workspace: Path, tmp_path: Path) -> None:
    result, server, _ = await run_agent([{"status": 500}], workspace, tmp_path,
                                        repeat_last=True)
    assert not result.finished and result.category == "model-error"
    assert "model API answered 500" in result.stop_reason
    assert len(server.requests) == FAST.attempts


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_malformed_tool_call_is_returned_as_error(provider: str, workspace: Path,
                                                        tmp_path: Path) -> None:
    script = [{"tool": "edit", "malformed": True}, *FIX_SCRIPT]
    result, server, _ = await run_agent(script, workspace, tmp_path, provider)
    assert result.finished
    assert "not valid JSON" in json.dumps(server.requests[1])


async def test_endless_model_stopped_by_step_budget(workspace: Path, tmp_path: Path) -> None:
    script = [{"tool": "bash", "args": {"command": "echo again"}}]
    result, _, transcript = await run_agent(script, workspace, tmp_path, repeat_last=True,
                                            budget=Budget(max_steps=7))
    assert not result.finished and result.category == "budget-exhausted"
    assert "step budget of 7" in result.stop_reason and result.spend.steps == 7
    assert transcript.read()[-1]["kind"] == "stop"


@pytest.mark.parametrize("budget,needle", [
    (Budget(max_tokens=2500), "token budget"),
    (Budget(max_cost_usd=0.004, price_in=3.0, price_out=15.0), "cost budget"),
    (Budget(max_wall_seconds=0.0), "time budget"),
])
async def test_each_budget_stops_at_its_bound(budget: Budget, needle: str, workspace: Path,
                                              tmp_path: Path) -> None:
    result, _, _ = await run_agent(FIX_SCRIPT, workspace, tmp_path, budget=budget)
    assert not result.finished and needle in result.stop_reason
    if needle == "token budget":
        assert result.spend.steps == 3 and result.spend.tokens == 3620  # first step over
    if needle == "cost budget":
        assert result.spend.cost_usd >= 0.004 and result.spend.steps == 2


async def test_api_key_never_reaches_sandbox_or_transcript(workspace: Path,
                                                           tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("HANDOFF_MODEL_API_KEY", API_KEY)
    script = [{"tool": "bash", "args": {"command": "env; cat /proc/*/environ 2>/dev/null | "
                                                   "tr '\\0' '\\n'; echo " + API_KEY[:8]}},
              {"tool": "finish", "args": {"summary": "looked around"}}]
    result, server, transcript = await run_agent(script, workspace, tmp_path)
    tool = next(e for e in transcript.read() if e["kind"] == "tool")
    assert API_KEY not in tool["result"]
    assert API_KEY not in (tmp_path / "transcript.jsonl").read_text()


async def test_external_agent_command(workspace: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.executor.agent.external import ExternalAgent

    monkeypatch.setenv("FAKE_AGENT_KEY", "fake-key-123")
    monkeypatch.setenv("OTHER_SECRET", "must-not-pass")
    command = ("grep -q 'Fix add' {spec_file} && sed -i 's/a - b/a + b/' calc.py && "
               "echo \"key=${FAKE_AGENT_KEY} other=${OTHER_SECRET:-unset}\"")
    agent = ExternalAgent(command, ["FAKE_AGENT_KEY"], Budget(max_wall_seconds=30),
                          Transcript(tmp_path / "t.jsonl"))
    box = await backend().start("ext", workspace)
    try:
        result = await agent.run("Fix add() so test_calc passes.", box)
        slow = await ExternalAgent("sleep 30", [], Budget(max_wall_seconds=2),
                                   Transcript(None)).run("x", box)
    finally:
        await box.close()
    assert result.finished and "key=fake-key-123 other=unset" in result.summary
    assert "return a + b" in (workspace / "calc.py").read_text()
    assert not slow.finished and slow.category == "budget-exhausted"
