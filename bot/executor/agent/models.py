"""Model providers behind one interface: OpenAI-compatible Chat Completions and Anthropic."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from bot.executor.agent.image_blocks import anthropic_blocks, openai_parts
from bot.github.retry import RetryPolicy, WaitTooLong, call_with_retries, retry_after_seconds
from bot.github.tls import client_context


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str = ""
    error: str = ""  # set when the arguments were not valid JSON


@dataclass
class Reply:
    text: str
    tool_calls: list[ToolCall]
    input_tokens: int  # all input tokens of the request, cached ones included
    output_tokens: int
    raw: dict[str, Any] = field(default_factory=dict)
    cached_tokens: int = 0  # input tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # input tokens written to the prompt cache


class ModelError(Exception):
    """The model API failed for good; the message says what it answered."""


class Model(Protocol):
    name: str

    async def complete(self, system: str, messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]]) -> Reply: ...


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (408, 409, 429) or exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def _asked(exc: BaseException) -> float | None:
    if isinstance(exc, httpx.HTTPStatusError):
        return retry_after_seconds(exc.response.headers)
    return None


def _parse_args(raw: Any) -> tuple[dict[str, Any] | None, str]:
    if isinstance(raw, dict):
        return raw, ""
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError) as exc:
        return None, f"tool call arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return None, "tool call arguments must be a JSON object"
    return value, ""


class HttpModel:
    """Shared HTTP plumbing: one client, bounded retries, errors in plain words."""

    name: str

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float = 120,
                 policy: RetryPolicy | None = None) -> None:
        self.base_url, self.name = base_url.rstrip("/"), model
        self.api_key = api_key
        self.timeout = timeout
        self.policy = policy or RetryPolicy(attempts=4, base_delay=2, max_delay=30, max_wait=120)

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=self.timeout, verify=client_context()) as client:
            async def send() -> dict[str, Any]:
                resp = await client.post(f"{self.base_url}{path}", json=body,
                                         headers=self.headers())
                resp.raise_for_status()
                return dict(resp.json())

            try:
                return await call_with_retries(send, self.policy, _retryable, _asked)
            except WaitTooLong as exc:
                raise ModelError(f"model API asked to wait {exc.seconds:.0f}s") from exc
            except httpx.HTTPStatusError as exc:
                detail = exc.response.text[:300].replace(self.api_key or "\0", "[redacted]")
                raise ModelError(f"model API answered {exc.response.status_code}: {detail}"
                                 ) from exc
            except httpx.TransportError as exc:
                raise ModelError(f"model API unreachable: {type(exc).__name__}") from exc
            except ValueError as exc:
                raise ModelError(f"model API sent a body that is not JSON: {exc}") from exc


class OpenAIChat(HttpModel):
    """The OpenAI-compatible Chat Completions API with tool calls."""

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def complete(self, system: str, messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]]) -> Reply:
        body = {"model": self.name, "messages": [{"role": "system", "content": system},
                                                 *to_openai(messages)],
                "tools": [{"type": "function", "function": t} for t in tools]}
        data = await self.post("/chat/completions", body)
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelError(f"model API reply has no message: {str(data)[:200]}") from exc
        calls = []
        for call in message.get("tool_calls") or []:
            fn = call.get("function", {})
            args, error = _parse_args(fn.get("arguments"))
            calls.append(ToolCall(call.get("id", ""), fn.get("name", ""), args,
                                  str(fn.get("arguments")), error))
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return Reply(message.get("content") or "", calls, _int(usage.get("prompt_tokens")),
                     _int(usage.get("completion_tokens")), data,
                     cached_tokens=_int(details.get("cached_tokens")))


class AnthropicMessages(HttpModel):
    """The Anthropic Messages API with tool use and prompt-cache breakpoints.

    Breakpoints (``cache_control``, at most four) go on the system prompt (which caches the
    tools before it too), the spec, the end of the part of the history that will not change
    again (the newest shortened tool output), and the newest message; a later request reads
    what an earlier one wrote.
    """

    cache = True

    def headers(self) -> dict[str, str]:
        out = {"anthropic-version": "2023-06-01"}
        if self.api_key:
            out["x-api-key"] = self.api_key
        return out

    async def complete(self, system: str, messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]]) -> Reply:
        system_field: str | list[dict[str, Any]] = system
        if self.cache:
            system_field = [{"type": "text", "text": system, "cache_control": dict(EPHEMERAL)}]
        body = {"model": self.name, "max_tokens": 8192, "system": system_field,
                "messages": to_anthropic(messages, cache=self.cache),
                "tools": [{"name": t["name"], "description": t["description"],
                           "input_schema": t["parameters"]} for t in tools]}
        data = await self.post("/v1/messages", body)
        text, calls = [], []
        for block in data.get("content") or []:
            if block.get("type") == "text":
                text.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                args, error = _parse_args(block.get("input"))
                calls.append(ToolCall(block.get("id", ""), block.get("name", ""), args,
                                      json.dumps(block.get("input")), error))
        usage = data.get("usage") or {}
        # Anthropic's input_tokens are the uncached ones only; Reply counts all of them.
        read, written = (_int(usage.get("cache_read_input_tokens")),
                         _int(usage.get("cache_creation_input_tokens")))
        return Reply("".join(text), calls, _int(usage.get("input_tokens")) + read + written,
                     _int(usage.get("output_tokens")), data, cached_tokens=read,
                     cache_write_tokens=written)


def _int(value: Any) -> int:
    """A usage count; absent, null or not a number counts as 0."""
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


# The loop keeps a neutral history: {"role": "user"|"assistant"|"tool", ...}.

def to_openai(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": m.get("text") or None}
            if m.get("tool_calls"):
                entry["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": c.raw_arguments}} for c in m["tool_calls"]]
            out.append(entry)
        elif m["role"] == "tool":
            out.append({"role": "tool", "tool_call_id": m["id"], "content": m["content"]})
        elif m.get("images"):
            out.append({"role": "user", "content": openai_parts(m["content"], m["images"])})
        else:
            out.append({"role": "user", "content": m["content"]})
    return out


EPHEMERAL = {"type": "ephemeral"}


def to_anthropic(messages: list[dict[str, Any]], cache: bool = False) -> list[dict[str, Any]]:
    """The neutral history as Anthropic messages; with ``cache``, breakpoints on the spec,
    the newest shortened tool output and the newest message."""
    out: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []  # the blocks that get a breakpoint
    aged = max((i for i, m in enumerate(messages) if m.get("aged")), default=-1)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            blocks: list[dict[str, Any]] = []
            if m.get("text"):
                blocks.append({"type": "text", "text": m["text"]})
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name,
                        "input": c.arguments or {}} for c in m.get("tool_calls") or []]
            out.append({"role": "assistant", "content": blocks})
        elif m["role"] == "tool":
            block = {"type": "tool_result", "tool_use_id": m["id"], "content": m["content"]}
            if (out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list)
                    and out[-1]["content"][-1].get("type") == "tool_result"):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            if i == aged:
                marks.append(block)
        elif m.get("images"):
            out.append({"role": "user", "content": anthropic_blocks(m["content"], m["images"])})
            if i == 0 and cache:
                marks.append(out[-1]["content"][-1])
        else:
            text = m["content"]
            out.append({"role": "user",
                        "content": [{"type": "text", "text": text}] if cache else text})
            if i == 0 and cache:
                marks.append(out[-1]["content"][-1])
    if cache and out and out[-1]["content"]:
        marks.append(out[-1]["content"][-1])
    for block in marks:
        block["cache_control"] = dict(EPHEMERAL)
    return out


def make_model(provider: str, base_url: str, model: str, api_key: str | None,
               timeout: float = 120, policy: RetryPolicy | None = None) -> Model:
    """A provider by name: ``openai`` (any compatible API) or ``anthropic``."""
    kinds: dict[str, type[HttpModel]] = {"openai": OpenAIChat, "anthropic": AnthropicMessages}
    if provider not in kinds:
        raise ValueError(f"unknown model provider {provider!r}; use openai or anthropic")
    instance: Model = kinds[provider](base_url, model, api_key, timeout, policy)  # type: ignore[assignment]
    return instance
