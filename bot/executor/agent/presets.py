"""The agent CLI presets (``agent: claude-code | codex | aider``): how each CLI runs without a
person, in the sandbox image of the ``agents`` flavour, pointed at the configured model
endpoint, and how its own report of tokens and dollars is read.

The CLI reaches its model through the job's relay (``relay.py``): the endpoint's ``key`` is
the job's token, never the model's key. The repository's MCP servers are given in each CLI's
own configuration (``cli_mcp.py``); aider takes none.

A preset's command writes the CLI's session (its JSON events) to ``SESSION_FILE``; the agent
reads that file back whole into the transcript and tallies the spend from it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.config import Settings
from bot.executor.agent.cli_mcp import MCP_CONFIG, NONE, Given, claude_config, codex_overrides

SESSION_FILE = "/tmp/handoff-session.jsonl"
AIDER_METADATA = "/tmp/handoff-aider-models.json"
# Set in the agents image too; given again so a repository's own image is as quiet.
QUIET = {"DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
         "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}


@dataclass(frozen=True)
class Endpoint:
    """Where the CLI's model is: the base URL, model, key (the relay's and the job's token,
    in the sandbox) and prices (dollars per million input and output tokens)."""

    base_url: str
    model: str
    key: str
    price_in: float = 0.0
    price_out: float = 0.0
    max_cost_usd: float = 0.0


@dataclass
class Tally:
    """What a CLI reported of its run."""

    input_tokens: int = 0  # all input tokens, cached ones included
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None  # None: the CLI reports no dollars
    steps: int = 0
    summary: str = ""
    error: str = ""  # the CLI's own word that it failed
    events: list[dict[str, Any]] = field(default_factory=list)


class Preset(Protocol):
    name: str  # as `agent:` names it
    title: str  # as people know it
    program: str  # the command it installs
    takes_mcp: bool  # whether it can be given MCP servers

    def command(self, endpoint: Endpoint, spec_file: str, mcp: Given = NONE) -> str:
        """The shell command: runs the CLI on the spec (with the MCP servers ``mcp``), its
        events into SESSION_FILE."""
        ...

    def env(self, endpoint: Endpoint) -> dict[str, str]:
        """The variables the CLI takes its endpoint and key from."""
        ...

    def tally(self, session: str, output: str) -> Tally:
        """The spend and summary from the session file and the CLI's printed output."""
        ...


def json_lines(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON Lines text; other lines (warnings, logs) are skipped."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


class ClaudeCode:
    """Claude Code: ``claude -p`` with stream-json events; Anthropic's Messages API at
    ANTHROPIC_BASE_URL; its result event carries the usage and ``total_cost_usd``."""

    name, title, program, takes_mcp = "claude-code", "Claude Code", "claude", True

    def command(self, endpoint: Endpoint, spec_file: str, mcp: Given = NONE) -> str:
        budget = f" --max-budget-usd {endpoint.max_cost_usd:g}" if endpoint.max_cost_usd else ""
        # Only the servers given here: none a repository's own .mcp.json names.
        servers, write = " --strict-mcp-config", ""
        if mcp:
            servers += f" --mcp-config {MCP_CONFIG}"
            write = f"printf %s {shlex.quote(json.dumps(claude_config(mcp)))} > {MCP_CONFIG} && "
        return (f"{write}claude -p --output-format stream-json --verbose "
                f"--dangerously-skip-permissions --model {shlex.quote(endpoint.model)}{budget}"
                f"{servers} < {spec_file} > {SESSION_FILE}")

    def env(self, endpoint: Endpoint) -> dict[str, str]:
        base = endpoint.base_url.rstrip("/").removesuffix("/v1")  # the client adds /v1/...
        return {**QUIET, "ANTHROPIC_BASE_URL": base, "ANTHROPIC_API_KEY": endpoint.key}

    def tally(self, session: str, output: str) -> Tally:
        events = list(json_lines(session))
        tally = Tally(events=events)
        result = next((e for e in reversed(events) if e.get("type") == "result"), None)
        if result is None:
            tally.error = "Claude Code ended without a result event"
            tally.steps = sum(1 for e in events if e.get("type") == "assistant")
            return tally
        usage = result.get("usage") or {}
        tally.cached_tokens = _int(usage.get("cache_read_input_tokens"))
        tally.cache_write_tokens = _int(usage.get("cache_creation_input_tokens"))
        tally.input_tokens = _int(usage.get("input_tokens")) + tally.cached_tokens + \
            tally.cache_write_tokens
        tally.output_tokens = _int(usage.get("output_tokens"))
        tally.cost_usd = float(result.get("total_cost_usd") or 0.0)
        tally.steps = _int(result.get("num_turns"))
        tally.summary = str(result.get("result") or "")
        if result.get("subtype") != "success":  # a limit: error_max_turns, _max_budget_usd
            tally.error = f"Claude Code stopped: {result.get('subtype')}"
        elif result.get("is_error"):
            tally.error = f"Claude Code failed: {tally.summary}".strip()
        return tally


class Codex:
    """Codex CLI: ``codex exec --json``; OpenAI's Responses API through a provider of its own
    config (base URL and the variable that holds the key); its turn.completed events carry the
    usage, priced here at the configured prices (Codex reports no dollars)."""

    name, title, program, takes_mcp = "codex", "Codex CLI", "codex", True

    def command(self, endpoint: Endpoint, spec_file: str, mcp: Given = NONE) -> str:
        provider = {"name": "handoff", "base_url": endpoint.base_url.rstrip("/"),
                    "env_key": "OPENAI_API_KEY", "wire_api": "responses"}
        # No analytics, and no plugin sync (it fetches from github.com and chatgpt.com).
        overrides = ["model_provider=handoff", "analytics.enabled=false",
                     "features.plugins=false",
                     *(f"model_providers.handoff.{k}={json.dumps(v)}"
                       for k, v in provider.items()),
                     *codex_overrides(mcp, "OPENAI_API_KEY")]
        flags = " ".join(f"-c {shlex.quote(o)}" for o in overrides)
        return (f"codex exec --json --dangerously-bypass-approvals-and-sandbox "
                f"--skip-git-repo-check -m {shlex.quote(endpoint.model)} {flags} - "
                f"< {spec_file} > {SESSION_FILE}")

    def env(self, endpoint: Endpoint) -> dict[str, str]:
        return {"OPENAI_API_KEY": endpoint.key}

    def tally(self, session: str, output: str) -> Tally:
        events = list(json_lines(session))
        tally = Tally(events=events)
        for event in events:
            kind, item = event.get("type"), event.get("item") or {}
            if kind == "turn.completed":
                usage = event.get("usage") or {}
                tally.input_tokens += _int(usage.get("input_tokens"))
                tally.cached_tokens += _int(usage.get("cached_input_tokens"))
                tally.cache_write_tokens += _int(usage.get("cache_write_input_tokens"))
                tally.output_tokens += _int(usage.get("output_tokens"))
            elif kind == "item.completed" and item.get("type") != "error":
                tally.steps += 1
                if item.get("type") == "agent_message":
                    tally.summary = str(item.get("text") or "")
            elif kind in ("turn.failed", "error"):
                error: dict[str, Any] = event["error"] \
                    if isinstance(event.get("error"), dict) else event
                tally.error = f"Codex CLI failed: {error.get('message', '')}".strip()
        return tally


class Aider:
    """aider: one ``--message-file`` with every question answered yes, no commits of its own
    and no analytics; OpenAI's Chat Completions at ``--openai-api-base``; its local analytics
    log (``--analytics-log``, nothing sent) has each message's tokens and cost, priced from
    the configured prices through ``--model-metadata-file``."""

    name, title, program, takes_mcp = "aider", "aider", "aider", False
    TOKENS = re.compile(r"^Tokens: .*$", re.M)

    def command(self, endpoint: Endpoint, spec_file: str, mcp: Given = NONE) -> str:
        model = f"openai/{endpoint.model}"
        metadata = {model: {"input_cost_per_token": endpoint.price_in / 1e6,
                            "output_cost_per_token": endpoint.price_out / 1e6,
                            "litellm_provider": "openai", "mode": "chat"}}
        flags = ["--model", model, "--openai-api-base", endpoint.base_url.rstrip("/"),
                 "--model-metadata-file", AIDER_METADATA, "--message-file", spec_file,
                 "--yes-always", "--no-stream", "--no-pretty", "--no-fancy-input",
                 "--no-auto-commits", "--no-dirty-commits", "--no-gitignore",
                 "--no-check-update", "--no-show-model-warnings", "--no-detect-urls",
                 "--analytics-disable", "--analytics-log", SESSION_FILE,
                 "--chat-history-file", "/tmp/handoff-aider-chat.md",
                 "--input-history-file", "/tmp/handoff-aider-input"]
        # Its repository map's cache is no part of the change.
        return (f"printf %s {shlex.quote(json.dumps(metadata))} > {AIDER_METADATA} && "
                f"aider {shlex.join(flags)}; status=$?; rm -rf .aider.tags.cache.v*; "
                f"exit $status")

    def env(self, endpoint: Endpoint) -> dict[str, str]:
        return {"OPENAI_API_KEY": endpoint.key, "AIDER_ANALYTICS_DISABLE": "true"}

    def tally(self, session: str, output: str) -> Tally:
        events = list(json_lines(session))
        tally = Tally(events=events)
        for event in events:
            props = event.get("properties") or {}
            if event.get("event") == "message_send":
                tally.steps += 1
                tally.input_tokens += _int(props.get("prompt_tokens"))
                tally.output_tokens += _int(props.get("completion_tokens"))
                tally.cost_usd = float(props.get("total_cost") or 0.0)
        tally.summary = aider_reply(output)
        if not tally.steps:
            tally.error = "aider sent no message to its model"
        return tally


def aider_reply(output: str) -> str:
    """aider's last answer as it printed it: the text before its last token line, after the
    one before (or after its banner), and what it did after."""
    parts = Aider.TOKENS.split(output)
    if len(parts) < 2:
        return output.strip()
    answer, after = parts[-2], parts[-1]
    if len(parts) == 2:  # one answer: it follows the banner
        lines = answer.splitlines()
        start = next((i + 1 for i, line in reversed(list(enumerate(lines)))
                      if line.startswith(("Repo-map:", "https://aider.chat/"))), 0)
        answer = "\n".join(lines[start:])
    return f"{answer.strip()}\n\n{after.strip()}".strip()


PRESETS: dict[str, Preset] = {p.name: p for p in (ClaudeCode(), Codex(), Aider())}
AGENTS = ("built-in", *PRESETS)  # the values of the `agent` setting


def preset_for(repo_agent: str | None, default: str) -> Preset | None:
    """The preset a job runs: the repository's choice, else the server's; None: built-in."""
    return PRESETS.get(repo_agent or default)


def image_for(repo_image: str | None, repo_agent: str | None, settings: Settings) -> str | None:
    """The job's sandbox image: the repository's own; for a CLI preset, the agents image;
    else None (the server's default)."""
    if repo_image or preset_for(repo_agent, settings.agent) is None:
        return repo_image
    return settings.agent_image
