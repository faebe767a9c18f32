"""A scripted model server speaking the OpenAI and Anthropic wire formats, for tests and demos.

A script is a list of turns, replayed in order, one per request:
  {"tool": "bash", "args": {"command": "ls"}}      a tool call (or "tools": [{...}, ...])
  {"text": "thinking..."}                          a plain answer
  {"status": 429, "retry_after": 1}                an error answer (also 500, 503, ...)
  {"tool": "edit", "malformed": true}              a tool call whose arguments are not JSON
  "usage": {"input": 100, "output": 20}            on any turn: the usage it reports
With ``repeat_last`` the final turn is replayed forever (a model that never finishes).
With ``per_conversation`` each conversation replays the script from its start (the turn is
picked by how many assistant turns the request already holds), so concurrent jobs each get
the whole script.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class ScriptedModel:
    """State of the server: the script, where it is, and the requests it saw."""

    def __init__(self, script: list[dict[str, Any]], repeat_last: bool = False,
                 api_key: str | None = None, per_conversation: bool = False) -> None:
        self.script, self.repeat_last, self.api_key = list(script), repeat_last, api_key
        self.per_conversation = per_conversation
        self.position = 0
        self.requests: list[dict[str, Any]] = []
        self.ids = itertools.count(1)
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.openai, methods=["POST"]),
            Route("/chat/completions", self.openai, methods=["POST"]),
            Route("/v1/messages", self.anthropic, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/models", self.models, methods=["GET"]),
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
    def _usage(turn: dict[str, Any], body: dict[str, Any]) -> tuple[int, int]:
        usage = turn.get("usage") or {}
        prompt = usage.get("input", len(json.dumps(body)) // 4)
        return int(prompt), int(usage.get("output", 20))

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
        prompt, completion = self._usage(turn, self.requests[-1])
        return JSONResponse({
            "id": f"chatcmpl-{next(self.ids)}", "object": "chat.completion", "created": 0,
            "model": self.requests[-1].get("model", "scripted"),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}})

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
        prompt, completion = self._usage(turn, self.requests[-1])
        return JSONResponse({
            "id": f"msg_{next(self.ids)}", "type": "message", "role": "assistant",
            "model": self.requests[-1].get("model", "scripted"), "content": content,
            "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in content)
            else "end_turn",
            "usage": {"input_tokens": prompt, "output_tokens": completion}})

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})
