"""The agent's context: old tool outputs shortened once, a stable prefix for prompt caches,
cache_control for Anthropic, cached tokens counted, and the token bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from bot.config import PROMPTS
from bot.executor.agent.loop import Agent, age_observations
from bot.executor.agent.models import make_model
from bot.executor.agent.transcript import Transcript
from bot.executor.sandbox import Sandbox
from bot.executor.sandbox.base import CommandResult
from bot.github.retry import RetryPolicy
from bot.jobs.spend import Budget, Spend
from bot.server import running
from devkit.scripted import ScriptedModel

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"openai": 19061, "anthropic": 19062}
LINES = 40


class StubBox:
    """A sandbox whose every command prints LINES numbered lines of its own."""

    def __init__(self) -> None:
        self.calls = 0

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None) -> CommandResult:
        self.calls += 1
        return CommandResult(0, "".join(f"output {self.calls} line {i}\n" for i in range(LINES)),
                             "")


def script(steps: int) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = [{"tool": "bash", "args": {"command": f"echo {i}"}}
                                   for i in range(steps - 1)]
    return [*turns, {"tool": "finish", "args": {"summary": "done"}}]


async def run(provider: str, steps: int, keep: int = 5, batch: int = 1,
              budget: Budget | None = None) -> tuple[ScriptedModel, Spend]:
    server = ScriptedModel(script(steps))
    async with running(server.app, port=PORTS[provider]) as url:
        base = f"{url}/v1" if provider == "openai" else url
        model = make_model(provider, base, "scripted-1", None, timeout=10,
                           policy=RetryPolicy(attempts=1))
        agent = Agent(model, budget or Budget(), Transcript(None), keep_observations=keep,
                      age_batch=batch)
        result = await agent.run("The spec. " * 400, cast(Sandbox, StubBox()))
    assert result.finished, result.stop_reason
    return server, result.spend


def tool_messages(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def test_age_observations_shortens_older_once() -> None:
    long = "\n".join(f"line {i}" for i in range(30)) + "\n[exit code 0]"
    messages: list[dict[str, Any]] = [{"role": "user", "content": "spec"}]
    for i in range(4):
        messages += [{"role": "assistant", "text": "", "tool_calls": []},
                     {"role": "tool", "id": str(i), "content": f"{i}\n{long}"}]
    messages.append({"role": "tool", "id": "short", "content": "edited calc.py"})
    assert age_observations(messages, keep=2) == 3
    tools = [m for m in messages if m["role"] == "tool"]
    assert tools[0]["content"] == "Old tool output: (32 lines omitted)\n[exit code 0]"
    assert all(m["aged"] for m in tools[:3])
    assert tools[3]["content"].startswith("3\n") and not tools[3].get("aged")
    assert tools[4]["content"] == "edited calc.py"
    frozen = json.dumps(messages[:6])
    assert age_observations(messages, keep=2) == 0  # nothing new: nothing rewritten
    assert json.dumps(messages[:6]) == frozen
    assert age_observations(messages, keep=0) == 0


def test_age_observations_in_batches() -> None:
    messages: list[dict[str, Any]] = [{"role": "tool", "id": str(i), "content": "x\n" * 300}
                                      for i in range(7)]
    assert age_observations(messages, keep=3, batch=5) == 0  # 7 whole < 3 + 5
    messages.append({"role": "tool", "id": "7", "content": "x\n" * 300})
    assert age_observations(messages, keep=3, batch=5) == 5
    assert [bool(m.get("aged")) for m in messages] == [True] * 5 + [False] * 3


@pytest.mark.parametrize("batch", [1, 5])
async def test_old_outputs_shortened_newest_whole_and_prefix_stable(batch: int) -> None:
    server, spend = await run("openai", steps=16, batch=batch)
    bodies = server.requests
    last = tool_messages(bodies[-1])
    whole = [c for c in last if c.startswith("output ")]
    assert len(whole) >= 5 and last[-5:] == whole[-5:]
    assert whole[-1].startswith("output 15 line 0\n") and whole[-1].endswith("[exit code 0]")
    aged = [c for c in last if not c.startswith("output ")]
    # LINES lines, a blank one and the exit status, which the note keeps.
    note = f"Old tool output: ({LINES + 2} lines omitted)\n[exit code 0]"
    assert aged and all(c == note for c in aged)
    assert len(aged) + len(whole) == 15
    for before, after in zip(bodies, bodies[1:], strict=False):
        # Everything up to the first whole tool output at step k is a byte-prefix at step k+1.
        msgs = before["messages"]
        first_whole = next((i for i, m in enumerate(msgs)
                            if m["role"] == "tool" and m["content"].startswith("output ")),
                           len(msgs))
        frozen = json.dumps([before["tools"], msgs[:first_whole]])[:-2]
        assert json.dumps([after["tools"], after["messages"]]).startswith(frozen)
    # The scripted server, like OpenAI, reports the shared prefix as cached.
    assert spend.cached_tokens > 0
    assert spend.cached_tokens < spend.input_tokens


async def test_without_aging_each_request_extends_the_last() -> None:
    server, _ = await run("openai", steps=8, keep=0)
    for before, after in zip(server.requests, server.requests[1:], strict=False):
        assert after["messages"][:len(before["messages"])] == before["messages"]
    assert all(c.startswith("output ") for c in tool_messages(server.requests[-1]))


async def test_anthropic_requests_carry_cache_control() -> None:
    server, spend = await run("anthropic", steps=12)
    for body in server.requests:
        assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
        blocks = [b for m in body["messages"] for b in m["content"]]
        marked = [b for b in blocks if "cache_control" in b]
        assert blocks[0]["cache_control"] == {"type": "ephemeral"}  # the spec
        assert "cache_control" in blocks[-1]  # the newest message
        assert 1 + len(marked) <= 4  # Anthropic allows four breakpoints
    last = [b for m in server.requests[-1]["messages"] for b in m["content"]]
    aged = [b for b in last if b.get("type") == "tool_result"
            and b["content"].startswith("Old tool output")]
    assert aged and "cache_control" in aged[-1]  # the end of what will not change again
    assert all("cache_control" not in b for b in aged[:-1])
    # Reads and writes from Anthropic's usage are counted, and in the input total.
    assert spend.cached_tokens > 0 and spend.cache_write_tokens > 0
    assert spend.input_tokens >= spend.cached_tokens + spend.cache_write_tokens


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_cached_tokens_counted_and_priced(provider: str) -> None:
    server = ScriptedModel([
        {"tool": "bash", "args": {"command": "ls"}, "usage": {"input": 3000, "cached": 2000,
                                                              "output": 100}},
        {"tool": "finish", "args": {"summary": "ok"}, "usage": {"input": 4000, "cached": 3000,
                                                                "output": 100}}])
    budget = Budget(price_in=2.0, price_out=10.0, price_cached_in=0.5)
    async with running(server.app, port=PORTS[provider]) as url:
        base = f"{url}/v1" if provider == "openai" else url
        model = make_model(provider, base, "scripted-1", None, timeout=10,
                           policy=RetryPolicy(attempts=1))
        result = await Agent(model, budget, Transcript(None)).run(
            "spec", cast(Sandbox, StubBox()))
    spend = result.spend
    assert (spend.input_tokens, spend.cached_tokens, spend.output_tokens) == (7000, 5000, 200)
    assert spend.cost_usd == pytest.approx((2000 * 2.0 + 5000 * 0.5 + 200 * 10.0) / 1e6)
    assert spend.as_dict()["cached_tokens"] == 5000
    assert "5,000 input cached" in spend.line()


def test_cached_tokens_at_input_price_when_unknown() -> None:
    spend = Spend()
    spend.add_usage(Budget(price_in=2.0, price_out=0.0), 1000, 0, cached_tokens=800)
    assert spend.cost_usd == pytest.approx(1000 * 2.0 / 1e6)
    assert spend.cached_tokens == 800


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "bench/agent_tokens.py"),
                           "--provider", "openai", "--port", "19063", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_bench_prints_with_and_without_and_meets_target() -> None:
    done = bench()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "openai     without" in done.stdout and "openai     with " in done.stdout
    assert "met" in done.stdout and "tokens counted with" in done.stdout


def test_bench_fails_when_target_missed() -> None:
    done = bench("--keep", "0")  # nothing shortened: "with" sends as much as "without"
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISSED" in done.stdout


def test_pr_body_shows_cached_tokens() -> None:
    from bot.executor.iterations import total_spend
    from bot.jobs.record import Iteration, Spent
    from bot.jobs.verdict import Verdict
    from bot.reporter.templates import Templates

    spend = total_spend([
        Iteration(job_id=1, kind="implement", spend=Spent(
            steps=3, input_tokens=9000, cached_tokens=6000, output_tokens=10, cost_usd=0.1,
            wall_seconds=1)),
        Iteration(job_id=2, kind="retry", spend=Spent(
            steps=1, input_tokens=1000, output_tokens=5, cost_usd=0.1, wall_seconds=1))])
    assert spend["cached_tokens"] == 6000
    context = dict(
        repo="o/r", issue={"number": 1, "title": "T", "body": "B"}, requested_by="a",
        criteria=[{"text": "x", "met": True, "evidence": "e"}], summary="s", base_sha="abcdef0",
        head_sha="1234567", tests_before="fail", tests_after="pass", regression=False,
        tests_base="fail", verdict=Verdict("neutral", "t", "done-unproven"),
        test_command="pytest", test_command_reason="why", iterations=[{"kind": "implement",
        "requested_by": "a", "summary": "s"}], model="m", inputs_seen=["issue"],
        inputs_excluded=[], check_first="a.py", risks=[], files=[], labels=[], comments=[],
        instructions=[], baseline="pass", feedback="", previous_summary="", diff="",
        base_branch="main", review_comments=[], pr_url="u")
    body = Templates(PROMPTS).render("summary", spend=spend, **context)
    assert "10,000 input (6,000 of them cached) and 15 output tokens" in body
    spend.pop("cached_tokens")
    body = Templates(PROMPTS).render("summary", spend=spend, **context)
    assert "10,000 input and 15 output tokens" in body
