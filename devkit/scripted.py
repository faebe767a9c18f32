"""A scripted model server speaking the OpenAI and Anthropic wire formats, for tests and demos.

A script is a list of turns, replayed in order, one per request:
  {"tool": "bash", "args": {"command": "ls"}}      a tool call (or "tools": [{...}, ...])
  {"text": "thinking..."}                          a plain answer
  {"status": 429, "retry_after": 1}                an error answer (also 500, 503, ...)
  {"tool": "edit", "malformed": true}              a tool call whose arguments are not JSON
  "usage": {"input": 100, "output": 20}            on any turn: the usage it reports
                                                   ("cached": 80 too: how much of it was cached)
Without a scripted usage the server counts like the real services (a token is 4 characters
here) and caches prompts as they do: an OpenAI request whose prefix (tools, then messages in
order) matches an earlier request's reports that much as ``cached_tokens``, in steps of 128
once the prompt has 1024 tokens; an Anthropic request reads the longest prefix, ending at a
block boundary, that an earlier request wrote at a ``cache_control`` breakpoint, and writes its
own breakpoints (``input_tokens`` then counts only the rest, as Anthropic's does).
With ``repeat_last`` the final turn is replayed forever (a model that never finishes).
With ``per_conversation`` each conversation replays the script from its start (the turn is
picked by how many assistant turns the request already holds), so concurrent jobs each get
the whole script. ``GET /_scripted/requests`` says how many requests came and which step each
asked for (a resumed agent must not ask for its saved steps again).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CHARS_PER_TOKEN = 4
MIN_CACHED = 1024  # tokens: shorter prompts are not cached, as with both services
OPENAI_STEP = 128  # OpenAI caches in steps of this many tokens
REMEMBERED = 16  # earlier OpenAI prompts compared with a new one


def _tokens(chars: int) -> int:
    return chars // CHARS_PER_TOKEN


def _piece(value: Any) -> str:
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "cache_control"}
    return json.dumps(value, sort_keys=True)


def _common_chars(a: list[str], b: list[str]) -> int:
    """Characters two prompts, given as pieces, share from their start."""
    chars = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            n = 0
            while n < min(len(x), len(y)) and x[n] == y[n]:
                n += 1
            return chars + n
        chars += len(x)
    return chars


class PromptCache:
    """The prompt caches of both services, as far as usage reports show them."""

    def __init__(self) -> None:
        self.openai_prompts: list[list[str]] = []
        self.anthropic_written: set[str] = set()

    def openai(self, body: dict[str, Any]) -> tuple[int, int]:
        """Prompt tokens and how many of them were cached."""
        pieces = [_piece(body.get("tools") or []), *map(_piece, body.get("messages") or [])]
        total = _tokens(sum(map(len, pieces)))
        common = max((_common_chars(pieces, p) for p in self.openai_prompts), default=0)
        self.openai_prompts = [*self.openai_prompts, pieces][-REMEMBERED:]
        cached = _tokens(common) // OPENAI_STEP * OPENAI_STEP
        return total, cached if total >= MIN_CACHED and cached >= MIN_CACHED else 0

    def anthropic(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """Uncached input tokens, tokens read from the cache, tokens written to it."""
        blocks: list[tuple[str, bool]] = []  # a piece, and whether a breakpoint ends it
        tools = body.get("tools") or []
        blocks.append((_piece(tools), any("cache_control" in t for t in tools)))
        system = body.get("system") or []
        for block in [{"type": "text", "text": system}] if isinstance(system, str) else system:
            blocks.append((_piece(block), "cache_control" in block))
        for m in body.get("messages") or []:
            content = m.get("content")
            for block in [{"type": "text", "text": content}] if isinstance(content, str) \
                    else content or []:
                blocks.append((m.get("role", "") + _piece(block), "cache_control" in block))
        chars, digest, read, written = 0, "", 0, 0
        for piece, breakpoint in blocks:
            chars += len(piece)
            digest = hashlib.sha256(f"{digest}{piece}".encode()).hexdigest()
            if digest in self.anthropic_written:
                read = _tokens(chars)
            elif breakpoint and _tokens(chars) >= MIN_CACHED:
                self.anthropic_written.add(digest)
                written = _tokens(chars)
        written = max(written - read, 0)
        return _tokens(chars) - read - written, read, written


class ScriptedModel:
    """State of the server: the script, where it is, and the requests it saw."""

    def __init__(self, script: list[dict[str, Any]], repeat_last: bool = False,
                 api_key: str | None = None, per_conversation: bool = False) -> None:
        self.script, self.repeat_last, self.api_key = list(script), repeat_last, api_key
        self.per_conversation = per_conversation
        self.position = 0
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []  # when each request came (time.time())
        self.cache = PromptCache()
        self.ids = itertools.count(1)
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.openai, methods=["POST"]),
            Route("/chat/completions", self.openai, methods=["POST"]),
            Route("/v1/messages", self.anthropic, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/models", self.models, methods=["GET"]),
            Route("/_scripted/requests", self.asked, methods=["GET"]),
        ])

    def next_turn(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.per_conversation and body is not None:
            index = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
            if index < len(self.script):
                return self.script[index]
        elif self.position < len(self.script):
            turn = self.script[self.position]
            self.position += 1
            return turn
        if self.repeat_last and self.script:
            return self.script[-1]
        return {"text": "(script exhausted)"}

    def _auth_error(self, request: Request, header: str) -> JSONResponse | None:
        if self.api_key is None:
            return None
        got = request.headers.get(header, "").removeprefix("Bearer ")
        if got != self.api_key:
            return JSONResponse({"error": {"type": "authentication_error",
                                           "message": "invalid api key"}}, 401)
        return None

    async def _turn(self, request: Request) -> tuple[dict[str, Any], JSONResponse | None]:
        body = await request.json()
        self.requests.append(body)
        self.times.append(time.time())
        turn = self.next_turn(body)
        if "status" in turn:
            headers = {"retry-after": str(turn["retry_after"])} if "retry_after" in turn else {}
            return turn, JSONResponse({"error": {"type": "scripted", "message":
                                                 f"scripted {turn['status']}"}},
                                      turn["status"], headers=headers)
        return turn, None

    @staticmethod
    def _calls(turn: dict[str, Any]) -> list[dict[str, Any]]:
        if "tools" in turn:
            return list(turn["tools"])
        if "tool" in turn:
            return [{"tool": turn["tool"], "args": turn.get("args", {}),
                     "malformed": turn.get("malformed", False)}]
        return []

    @staticmethod
    def _scripted(turn: dict[str, Any]) -> tuple[int | None, int, int]:
        usage = turn.get("usage") or {}
        prompt = usage.get("input")
        return (None if prompt is None else int(prompt), int(usage.get("cached", 0)),
                int(usage.get("output", 20)))

    async def openai(self, request: Request) -> JSONResponse:
        if error := self._auth_error(request, "authorization"):
            return error
        turn, error = await self._turn(request)
        if error:
            return error
        calls = [{"id": f"call_{next(self.ids)}", "type": "function", "function": {
            "name": c["tool"], "arguments": "{not json" if c.get("malformed")
            else json.dumps(c.get("args", {}))}} for c in self._calls(turn)]
        message: dict[str, Any] = {"role": "assistant", "content": turn.get("text")}
        if calls:
            message["tool_calls"] = calls
        prompt, cached, completion = self._scripted(turn)
        if prompt is None:
            prompt, cached = self.cache.openai(self.requests[-1])
        return JSONResponse({
            "id": f"chatcmpl-{next(self.ids)}", "object": "chat.completion", "created": 0,
            "model": self.requests[-1].get("model", "scripted"),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached}}})

    async def anthropic(self, request: Request) -> JSONResponse:
        if error := self._auth_error(request, "x-api-key"):
            return error
        turn, error = await self._turn(request)
        if error:
            return error
        content: list[dict[str, Any]] = []
        if turn.get("text"):
            content.append({"type": "text", "text": turn["text"]})
        for c in self._calls(turn):
            # Anthropic sends parsed input; a malformed one arrives as a bare string.
            content.append({"type": "tool_use", "id": f"toolu_{next(self.ids)}",
                            "name": c["tool"],
                            "input": "{not json" if c.get("malformed") else c.get("args", {})})
        prompt, read, completion = self._scripted(turn)
        written = 0
        if prompt is None:
            prompt, read, written = self.cache.anthropic(self.requests[-1])
        else:
            prompt -= read
        return JSONResponse({
            "id": f"msg_{next(self.ids)}", "type": "message", "role": "assistant",
            "model": self.requests[-1].get("model", "scripted"), "content": content,
            "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in content)
            else "end_turn",
            "usage": {"input_tokens": prompt, "output_tokens": completion,
                      "cache_read_input_tokens": read, "cache_creation_input_tokens": written}})

    def steps_asked(self) -> list[int]:
        """For each request so far, in order, the step it asked for: how many assistant
        turns its conversation held already (a step asked twice was asked again)."""
        return [sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
                for body in self.requests]

    async def asked(self, request: Request) -> JSONResponse:
        """``GET /_scripted/requests``: the requests' count and the steps they asked for."""
        return JSONResponse({"requests": len(self.requests), "steps": self.steps_asked()})

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})
