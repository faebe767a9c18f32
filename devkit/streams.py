"""The streamed forms of the scripted model's answers, event by event as each service sends
them: Anthropic's Messages SSE, OpenAI's Responses SSE and Chat Completions chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

PIECE = 24  # characters of text or arguments per delta, so a client joins several


def _pieces(text: str) -> list[str]:
    return [text[i:i + PIECE] for i in range(0, len(text), PIECE)] or [""]


def sse(event: str | None, data: dict[str, Any] | str) -> str:
    """One server-sent event (OpenAI's chunks have no ``event:`` line)."""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {body}\n\n"


def anthropic_events(message: dict[str, Any]) -> Iterator[str]:
    """A finished Messages API answer as Anthropic streams it: message_start (input usage),
    a start, deltas and a stop per content block, message_delta (stop reason, output usage),
    message_stop."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}
    yield sse("message_start", {"type": "message_start", "message": start})
    yield sse("ping", {"type": "ping"})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            first: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        else:
            first = {**block, "input": {}}
            raw = block["input"] if isinstance(block["input"], str) \
                else json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(raw)]
        yield sse("content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": first})
        for delta in deltas:
            yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": delta})
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield sse("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": message["stop_reason"],
                                          "stop_sequence": None},
                                "usage": {"output_tokens": usage["output_tokens"]}})
    yield sse("message_stop", {"type": "message_stop"})


def responses_events(response: dict[str, Any]) -> Iterator[str]:
    """A finished Responses API answer as OpenAI streams it: response.created and
    .in_progress, each output item added, its deltas and done events, then
    response.completed with the usage."""
    seq = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> str:
        return sse(kind, {"type": kind, "sequence_number": next(seq), **fields})

    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    for index, item in enumerate(response["output"]):
        yield from _item_events(event, index, item)
    yield event("response.completed", response=response)


def _item_events(event: Any, index: int, item: dict[str, Any]) -> Iterator[str]:
    at = {"item_id": item["id"], "output_index": index}
    if item["type"] == "message":
        yield event("response.output_item.added", output_index=index,
                    item={**item, "status": "in_progress", "content": []})
        text = item["content"][0]["text"]
        part = {"type": "output_text", "text": "", "annotations": []}
        yield event("response.content_part.added", **at, content_index=0, part=part)
        for piece in _pieces(text):
            yield event("response.output_text.delta", **at, content_index=0, delta=piece)
        yield event("response.output_text.done", **at, content_index=0, text=text)
        yield event("response.content_part.done", **at, content_index=0,
                    part={**part, "text": text})
    elif item["type"] == "function_call":
        yield event("response.output_item.added", output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""})
        for piece in _pieces(item["arguments"]):
            yield event("response.function_call_arguments.delta", **at, delta=piece)
        yield event("response.function_call_arguments.done", **at,
                    arguments=item["arguments"])
    else:  # custom_tool_call: free-form input (Codex's apply_patch)
        yield event("response.output_item.added", output_index=index,
                    item={**item, "status": "in_progress", "input": ""})
        for piece in _pieces(item["input"]):
            yield event("response.custom_tool_call_input.delta", **at, delta=piece)
        yield event("response.custom_tool_call_input.done", **at, input=item["input"])
    yield event("response.output_item.done", output_index=index, item=item)


def chat_chunks(completion: dict[str, Any], include_usage: bool) -> Iterator[str]:
    """A finished Chat Completions answer as ``chat.completion.chunk`` events: the role, the
    content and tool calls in pieces, the finish reason, the usage when the request asked
    for it (``stream_options.include_usage``), then ``[DONE]``."""
    choice, head = completion["choices"][0], {
        k: completion[k] for k in ("id", "created", "model")}
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return sse(None, {**head, "object": "chat.completion.chunk",
                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(message.get("content") or "") if message.get("content") else []:
        yield chunk({"content": piece})
    for n, call in enumerate(message.get("tool_calls") or []):
        yield chunk({"tool_calls": [{"index": n, "id": call["id"], "type": "function",
                                     "function": {"name": call["function"]["name"],
                                                  "arguments": ""}}]})
        for piece in _pieces(call["function"]["arguments"]):
            yield chunk({"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield sse(None, {**head, "object": "chat.completion.chunk", "choices": [],
                         "usage": completion["usage"]})
    yield sse(None, "[DONE]")
