"""The built-in agent: the loop runs in the worker, every action runs in the sandbox."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from bot.config import PROMPTS
from bot.executor.agent.models import Model, ModelError, ToolCall
from bot.executor.agent.tools import TOOLS, ToolResult, run_tool
from bot.executor.agent.transcript import Transcript
from bot.executor.sandbox import Sandbox
from bot.jobs.record import Checkpoint as Saved
from bot.jobs.spend import Budget, Spend

# The agent's system prompt, a text like the others in prompts/ (not a spec template).
SYSTEM = (PROMPTS / "_system.md").read_text().strip()


class ToolSet(Protocol):
    """Tools beside the agent's own (an MCP server's), each call answered as text."""

    @property
    def specs(self) -> list[dict[str, Any]]: ...

    def handles(self, name: str) -> bool: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult: ...


Progress = Callable[[Spend], Awaitable[None]]
# Called after each step's tool calls: the conversation so far (``dump_messages``) and spend.
Checkpoint = Callable[[list[dict[str, Any]], Spend], Awaitable[None]]
# Asked once when the agent first calls `finish`: a note that sends it back (the files it
# added, to drop its scratch), or "" to let it finish.
BeforeFinish = Callable[[], Awaitable[str]]
KEEP_OBSERVATIONS = 5
AGE_BATCH = 5  # tool outputs shortened at a time, so the cached prefix lasts 5 steps
SHORT_OUTPUT = 200  # characters; a tool output this short is never shortened


def shorten(content: str) -> str:
    """An aged tool output: a one-line note, and the exit status line of a command."""
    lines = content.splitlines()
    if len(content) <= SHORT_OUTPUT and len(lines) <= 3:
        return content
    last = lines[-1] if lines else ""
    status = f"\n{last}" if last.startswith("[") and last.endswith("]") and len(last) < 120 \
        else ""
    return f"Old tool output: ({len(lines)} lines omitted){status}"


def age_observations(messages: list[dict[str, Any]], keep: int, batch: int = 1) -> int:
    """Shorten every tool output but the newest ``keep`` ones, each once, in place.

    An output is rewritten only when it ages out and marked ``aged``; it is never touched
    again, so everything before the oldest full output stays byte-stable from one request to
    the next (the prefix a provider's prompt cache matches). With ``batch`` above 1 outputs
    age ``batch`` at a time, once ``keep + batch`` are whole: the prompt then changes inside
    the cached prefix only every ``batch`` outputs. ``keep`` 0 keeps all outputs. Returns how
    many were shortened now.
    """
    if keep <= 0:
        return 0
    tools = [m for m in messages if m["role"] == "tool"]
    if sum(1 for m in tools if not m.get("aged")) < keep + max(batch, 1):
        return 0
    aged = 0
    for m in tools[:-keep]:
        if not m.get("aged"):
            m["content"], m["aged"] = shorten(m["content"]), True
            aged += 1
    return aged


def dump_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as JSON-ready data (its tool calls as dicts)."""
    return [{**m, "tool_calls": [asdict(c) for c in m["tool_calls"]]} if "tool_calls" in m
            else dict(m) for m in messages]


def load_messages(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation ``dump_messages`` saved, as the loop holds it."""
    return [{**m, "tool_calls": [ToolCall(**c) for c in m["tool_calls"]]} if "tool_calls" in m
            else dict(m) for m in data]


@dataclass
class AgentResult:
    """How a run ended: finished with a summary, or stopped with a reason."""

    finished: bool
    summary: str
    stop_reason: str
    spend: Spend
    category: str = ""  # budget-exhausted | model-error when not finished
    steps_log: list[dict[str, Any]] = field(default_factory=list)


class Agent:
    """A small tool-calling loop with budgets and a transcript."""

    def __init__(self, model: Model, budget: Budget, transcript: Transcript,
                 command_timeout: float = 600, progress: Progress | None = None,
                 keep_observations: int = KEEP_OBSERVATIONS, age_batch: int = AGE_BATCH,
                 checkpoint: Checkpoint | None = None,
                 before_finish: BeforeFinish | None = None, extra: ToolSet | None = None,
                 images: list[dict[str, Any]] | None = None) -> None:
        self.model, self.budget, self.transcript = model, budget, transcript
        self.extra, self.images = extra, images or []
        self.before_finish = before_finish
        self.command_timeout = command_timeout
        self.progress, self.checkpoint = progress, checkpoint
        self.keep_observations, self.age_batch = keep_observations, age_batch

    async def run(self, spec: str, sandbox: Sandbox, resume: Saved | None = None
                  ) -> AgentResult:
        """Run to ``finish`` or a budget; with ``resume`` (a checkpoint: ``messages`` and
        ``spend``), go on from that step's conversation instead of the spec."""
        if resume:
            spend = Spend.saved(resume.spend)
            messages = load_messages(resume.messages)
            self.transcript.write("resumed", step=spend.steps, model=self.model.name)
        else:
            spend = Spend()
            messages = [{"role": "user", "content": spec}]
            if self.images:  # given once, with the spec (files, read when a request is made)
                messages[0]["images"] = self.images
            self.transcript.write("spec", text=spec, model=self.model.name,
                                  **({"images": self.images} if self.images else {}))
        reviewed = self.before_finish is None  # shown its added files once a run
        tools = TOOLS + (self.extra.specs if self.extra else [])
        while True:
            if reason := spend.exhausted(self.budget):
                return self._stop(spend, reason, "budget-exhausted")
            started = time.monotonic()
            try:
                reply = await self.model.complete(SYSTEM, messages, tools)
            except ModelError as exc:
                self.transcript.write("model_error", error=str(exc))
                return self._stop(spend, str(exc), "model-error")
            spend.steps += 1
            spend.add_usage(self.budget, reply.input_tokens, reply.output_tokens,
                            reply.cached_tokens, reply.cache_write_tokens)
            self.transcript.write(
                "model", step=spend.steps, text=reply.text, seconds=time.monotonic() - started,
                input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                cached_tokens=reply.cached_tokens, cache_write_tokens=reply.cache_write_tokens,
                tool_calls=[{"id": c.id, "name": c.name, "arguments": c.raw_arguments}
                            for c in reply.tool_calls])
            messages.append({"role": "assistant", "text": reply.text,
                             "tool_calls": reply.tool_calls})
            if self.progress:
                await self.progress(spend)
            if not reply.tool_calls:
                messages.append({"role": "user", "content": "Use the tools to continue, or "
                                 "call `finish` with your summary."})
                continue
            for call in reply.tool_calls:
                if call.arguments is None:
                    content, finished = f"error: {call.error}", None
                else:
                    t0 = time.monotonic()
                    result = await self.extra.call(call.name, call.arguments) \
                        if self.extra and self.extra.handles(call.name) else \
                        await run_tool(sandbox, call.name, call.arguments, self.command_timeout)
                    content, finished = result.content, result.finished
                    self.transcript.write("tool", step=spend.steps, name=call.name,
                                          arguments=call.arguments, ok=result.ok,
                                          result=content, seconds=time.monotonic() - t0)
                messages.append({"role": "tool", "id": call.id, "content": content})
                if finished is not None and not reviewed:
                    reviewed = True
                    assert self.before_finish is not None
                    if note := await self.before_finish():  # not finished yet: the note instead
                        self.transcript.write("review", text=note)
                        messages[-1]["content"], finished = note, None
                if finished is not None:
                    self.transcript.write("finish", summary=finished, spend=spend.as_dict())
                    return AgentResult(True, finished, "finished", spend)
            # The transcript keeps every output whole; the model sees the newest in full.
            age_observations(messages, self.keep_observations, self.age_batch)
            if self.checkpoint:
                await self.checkpoint(dump_messages(messages), spend)

    def _stop(self, spend: Spend, reason: str, category: str) -> AgentResult:
        self.transcript.write("stop", reason=reason, category=category, spend=spend.as_dict())
        return AgentResult(False, "", reason, spend, category)
