"""A scripted model server speaking the OpenAI and Anthropic wire formats, for tests and demos:
Chat Completions and Responses (OpenAI's, as aider and Codex CLI call them) and Messages
(Anthropic's, as Claude Code calls it), each whole or streamed (``"stream": true``), with the
services' error bodies, request-id headers and usage fields.

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
A turn's tool call goes out in the caller's form: a function call, or, for a tool the request
declares as ``custom`` (Codex's apply_patch), a custom tool call whose input is ``args.input``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from devkit.streams import anthropic_events, chat_chunks, responses_events

CHARS_PER_TOKEN = 4
MIN_CACHED = 1024  # tokens: shorter prompts are not cached, as with both services
OPENAI_STEP = 128  # OpenAI caches in steps of this many tokens
REMEMBERED = 16  # earlier OpenAI prompts compared with a new one
# The error types each service names for a status.
ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 529: "overloaded_error"}
OPENAI_ERRORS = {400: "invalid_request_error", 401: "invalid_request_error",
                 429: "rate_limit_exceeded", 503: "server_error"}
ASSISTANT_ITEMS = {"function_call", "custom_tool_call", "reasoning"}


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
        """Prompt tokens and how many of them were cached (Chat Completions: tools then
        messages; Responses: tools, instructions, then input items)."""
        if "input" in body:
            items = body["input"] if isinstance(body["input"], list) else [body["input"]]
            pieces = [_piece(body.get("tools") or []), _piece(body.get("instructions") or ""),
                      *map(_piece, items)]
        else:
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
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
            Route("/v1/responses", self.responses, methods=["POST"]),
            Route("/responses", self.responses, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/models", self.models, methods=["GET"]),
            Route("/_scripted/requests", self.asked, methods=["GET"]),
        ])

    def next_turn(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.per_conversation and body is not None:
            index = assistant_turns(body)
            if index < len(self.script):
                return self.script[index]
        elif self.position < len(self.script):
            turn = self.script[self.position]
            self.position += 1
            return turn
        if self.repeat_last and self.script:
            return self.script[-1]
        return {"text": "(script exhausted)"}

    def _error(self, status: int, message: str, anthropic: bool,
               headers: dict[str, str] | None = None) -> JSONResponse:
        """An error answer in the service's own shape, with its request id."""
        rid = f"req_{next(self.ids):024d}"
        if anthropic:
            return JSONResponse({"type": "error", "error": {
                "type": ANTHROPIC_ERRORS.get(status, "api_error"), "message": message},
                "request_id": rid}, status, headers={**(headers or {}), "request-id": rid})
        kind = OPENAI_ERRORS.get(status, "server_error")
        return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                       "code": "invalid_api_key" if status == 401 else kind}},
                            status, headers={**(headers or {}), "x-request-id": rid})

    def _auth_error(self, request: Request, anthropic: bool) -> JSONResponse | None:
        if self.api_key is None:
            return None
        header = "x-api-key" if anthropic and "x-api-key" in request.headers \
            else "authorization"
        got = request.headers.get(header, "").removeprefix("Bearer ")
        if got != self.api_key:
            return self._error(401, "invalid x-api-key" if anthropic
                               else "Incorrect API key provided.", anthropic)
        return None

    async def _turn(self, request: Request, anthropic: bool = False
                    ) -> tuple[dict[str, Any], JSONResponse | None]:
        body = await request.json()
        self.requests.append(body)
        self.times.append(time.time())
        turn = self.next_turn(body)
        if "status" in turn:
            headers = {"retry-after": str(turn["retry_after"])} if "retry_after" in turn else {}
            return turn, self._error(turn["status"], f"scripted {turn['status']}", anthropic,
                                     headers)
        return turn, None

    def _answer(self, body: dict[str, Any], events: Any, whole: dict[str, Any],
                anthropic: bool = False) -> Response:
        """The answer whole, or streamed as server-sent events when the request asked."""
        rid = f"req_{next(self.ids):024d}"
        headers = {"request-id": rid} if anthropic else {"x-request-id": rid}
        if body.get("stream"):
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={**headers, "cache-control": "no-cache"})
        return JSONResponse(whole, headers=headers)

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

    async def openai(self, request: Request) -> Response:
        if error := self._auth_error(request, anthropic=False):
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
        body = self.requests[-1]
        whole = {
            "id": f"chatcmpl-{next(self.ids)}", "object": "chat.completion", "created": 0,
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached}}}
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        return self._answer(body, chat_chunks(whole, include), whole)

    async def responses(self, request: Request) -> Response:
        """OpenAI's Responses API (``POST /v1/responses``), as Codex CLI calls it."""
        if error := self._auth_error(request, anthropic=False):
            return error
        turn, error = await self._turn(request)
        if error:
            return error
        body = self.requests[-1]
        custom = {t.get("name") for t in body.get("tools") or [] if t.get("type") == "custom"}
        # A tool in a namespace (Codex's MCP servers): called by its own name, in that
        # namespace, as the service does; the script names it <namespace>__<tool>.
        spaced = {f"{t['name']}__{inner.get('name')}": (t["name"], inner.get("name"))
                  for t in body.get("tools") or [] if t.get("type") == "namespace"
                  for inner in t.get("tools") or []}
        output: list[dict[str, Any]] = []
        for c in self._calls(turn):
            n = next(self.ids)
            if c["tool"] in spaced:
                namespace, name = spaced[c["tool"]]
                output.append({"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}",
                               "namespace": namespace, "name": name, "status": "completed",
                               "arguments": json.dumps(c.get("args", {}))})
            elif c["tool"] in custom:
                output.append({"type": "custom_tool_call", "id": f"ctc_{n}",
                               "call_id": f"call_{n}", "name": c["tool"],
                               "input": str(c.get("args", {}).get("input", "")),
                               "status": "completed"})
            else:
                output.append({"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}",
                               "name": c["tool"], "status": "completed",
                               "arguments": "{not json" if c.get("malformed")
                               else json.dumps(c.get("args", {}))})
        if turn.get("text") or not output:
            output.insert(0, {"type": "message", "id": f"msg_{next(self.ids)}",
                              "status": "completed", "role": "assistant",
                              "content": [{"type": "output_text", "text": turn.get("text") or "",
                                           "annotations": []}]})
        prompt, cached, completion = self._scripted(turn)
        if prompt is None:
            prompt, cached = self.cache.openai(body)
        whole = {
            "id": f"resp_{next(self.ids):024d}", "object": "response", "created_at": 0,
            "status": "completed", "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"), "model": body.get("model", "scripted"),
            "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store", True), "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [], "metadata": {},
            "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
                      "output_tokens": completion,
                      "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": prompt + completion}}
        return self._answer(body, responses_events(whole), whole)

    async def count_tokens(self, request: Request) -> Response:
        """``POST /v1/messages/count_tokens``: the prompt's size, as the cache counts it."""
        if error := self._auth_error(request, anthropic=True):
            return error
        body = await request.json()
        tokens = sum(PromptCache().anthropic(body))
        return JSONResponse({"input_tokens": tokens})

    async def anthropic(self, request: Request) -> Response:
        if error := self._auth_error(request, anthropic=True):
            return error
        turn, error = await self._turn(request, anthropic=True)
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
        body = self.requests[-1]
        whole = {
            "id": f"msg_{next(self.ids)}", "type": "message", "role": "assistant",
            "model": body.get("model", "scripted"), "content": content,
            "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in content)
            else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion,
                      "cache_read_input_tokens": read, "cache_creation_input_tokens": written}}
        return self._answer(body, anthropic_events(whole), whole, anthropic=True)

    def steps_asked(self) -> list[int]:
        """For each request so far, in order, the step it asked for: how many assistant
        turns its conversation held already (a step asked twice was asked again)."""
        return [assistant_turns(body) for body in self.requests]

    async def asked(self, request: Request) -> JSONResponse:
        """``GET /_scripted/requests``: the requests' count and the steps they asked for."""
        return JSONResponse({"requests": len(self.requests), "steps": self.steps_asked()})

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})


def assistant_turns(body: dict[str, Any]) -> int:
    """How many assistant turns a request's conversation holds: assistant messages, or, in a
    Responses API input, runs of items the model gave (messages, calls, reasoning)."""
    if "messages" in body:
        return sum(1 for m in body["messages"] if m.get("role") == "assistant")
    items: list[Any] = body["input"] if isinstance(body.get("input"), list) else []
    turns, inside = 0, False
    for item in items:
        mine = item.get("type") in ASSISTANT_ITEMS or item.get("role") == "assistant"
        turns += mine and not inside
        inside = mine
    return turns
