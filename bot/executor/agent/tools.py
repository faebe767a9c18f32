"""The agent's tools; every one of them runs inside the sandbox."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from bot.executor.sandbox import Sandbox

MAX_RESULT_CHARS = 12_000

TOOLS: list[dict[str, Any]] = [
    {"name": "bash", "description": "Run a shell command in the repository (cwd /workspace). "
     "No network. Output is cut when long.",
     "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                    "required": ["command"]}},
    {"name": "view", "description": "Show a file with line numbers, or a range of its lines.",
     "parameters": {"type": "object", "properties": {
         "path": {"type": "string"}, "start": {"type": "integer"}, "end": {"type": "integer"}},
                    "required": ["path"]}},
    {"name": "edit", "description": "Replace one exact, unique occurrence of old_text with "
     "new_text in a file.",
     "parameters": {"type": "object", "properties": {
         "path": {"type": "string"}, "old_text": {"type": "string"},
         "new_text": {"type": "string"}}, "required": ["path", "old_text", "new_text"]}},
    {"name": "create", "description": "Create (or overwrite) a file with the given content.",
     "parameters": {"type": "object", "properties": {
         "path": {"type": "string"}, "content": {"type": "string"}},
                    "required": ["path", "content"]}},
    {"name": "finish", "description": "Finish: give reviewers a summary of what changed, why, "
     "and how each acceptance criterion was met.",
     "parameters": {"type": "object", "properties": {"summary": {"type": "string"}},
                    "required": ["summary"]}},
]

# Runs inside the sandbox: file edits with clear errors, arguments read from stdin.
FILE_SCRIPT = r"""
import json, os, sys
a = json.load(sys.stdin)
p = a["path"]
op = a["op"]
def fail(msg):
    print(msg); sys.exit(3)
if op == "create":
    d = os.path.dirname(p)
    if d: os.makedirs(d, exist_ok=True)
    open(p, "w").write(a["content"]); print(f"created {p} ({len(a['content'])} characters)")
    sys.exit(0)
if not os.path.isfile(p):
    fail(f"error: {p} does not exist (or is not a file)")
text = open(p, encoding="utf-8", errors="replace").read()
if op == "view":
    lines = text.splitlines()
    s = max(1, a.get("start") or 1); e = min(len(lines), a.get("end") or len(lines))
    print("\n".join(f"{i:6}\t{lines[i-1]}" for i in range(s, e + 1)) or f"({p} is empty)")
    sys.exit(0)
if a["old_text"] == a["new_text"]:
    fail(f"error: old_text and new_text are the same, so {p} was not changed")
n = text.count(a["old_text"])
if n == 0:
    fail(f"error: old_text not found in {p}; view the file and copy the text exactly")
if n > 1:
    fail(f"error: old_text occurs {n} times in {p}; include more context to make it unique")
open(p, "w").write(text.replace(a["old_text"], a["new_text"], 1))
print(f"edited {p}")
"""


def clip(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """Keep the head and tail of a long text, saying how much was cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


@dataclass
class ToolResult:
    content: str
    ok: bool = True
    finished: str | None = None  # the summary, when the agent finished


async def run_tool(sandbox: Sandbox, name: str, args: dict[str, Any], timeout: float
                   ) -> ToolResult:
    """Run one tool call in the sandbox; errors come back as text for the model."""
    try:
        if name == "bash":
            result = await sandbox.exec(str(args["command"]), timeout=timeout)
            parts = [result.stdout, result.stderr and f"[stderr]\n{result.stderr}"]
            if result.truncated:
                parts.append(f"[output cut: {result.cut_bytes} more bytes not shown]")
            parts.append(f"[{result.describe()}]")
            return ToolResult(clip("\n".join(p for p in parts if p)), result.ok)
        if name == "finish":
            return ToolResult("finished", finished=str(args.get("summary", "")))
        if name in ("view", "edit", "create"):
            payload = {**args, "op": name}
            result = await sandbox.exec(f"python3 -c {shlex.quote(FILE_SCRIPT)}", timeout=60,
                                        stdin=json.dumps(payload).encode())
            text = result.stdout or result.stderr or result.describe()
            return ToolResult(clip(text), result.exit_code == 0)
    except KeyError as exc:
        return ToolResult(f"error: missing argument {exc} for {name}", ok=False)
    return ToolResult(f"error: unknown tool {name!r}; use one of "
                      f"{', '.join(t['name'] for t in TOOLS)}", ok=False)
