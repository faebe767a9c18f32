"""The repository's MCP servers (``mcp:``) for an agent CLI, in the CLI's own configuration.

A local server is run by the CLI itself inside the sandbox, as the built-in agent's is. A
remote one is reached through the job's relay on the worker (``relay.py``): the CLI is given
the relay's URL for it and the job's token, the relay adds the server's headers with their
secrets, so no secret enters the sandbox; its host is checked against the egress allowlist
first, as for the built-in agent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bot.executor.agent.mcp import McpTools, remote_headers
from bot.executor.agent.mcp.secrets import SecretLookup
from bot.executor.repo_config import McpServer

MCP_CONFIG = "/tmp/handoff-mcp.json"  # Claude Code's --mcp-config, written by the command
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")  # a TOML key Codex's -c takes unquoted


@dataclass
class CliServers:
    """What a CLI is given: local servers as configured, remote ones' upstream URL and
    headers (for the relay, never the sandbox), and what the pull request says of them."""

    local: dict[str, McpServer] = field(default_factory=dict)
    remote: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.local or self.remote)


@dataclass(frozen=True)
class Given:
    """The servers as the CLI in the sandbox reaches them: local ones run by it, remote ones
    at the relay's URL with the job's token."""

    local: dict[str, McpServer]
    remote: dict[str, str]  # name -> the relay's URL for it
    token: str

    def __bool__(self) -> bool:
        return bool(self.local or self.remote)


NONE = Given({}, {}, "")


async def for_cli(servers: dict[str, McpServer], title: str, allow: list[str],
                  allow_private: bool, secret: SecretLookup) -> CliServers:
    """The servers ``title`` (a CLI) gets; a remote one whose secret is unset or whose host is
    not allowed is left out, with the reason."""
    checked = McpTools()
    found = CliServers()
    for name, config in servers.items():
        if config.command is not None:
            found.local[name] = config
            found.seen.append(f"MCP server `{name}`: given to {title}, run by it in the "
                              "sandbox")
            continue
        headers = await remote_headers(name, config, checked, allow, allow_private, secret)
        if headers is not None:
            assert config.url is not None
            found.remote[name] = (config.url, headers)
            found.seen.append(f"MCP server `{name}`: given to {title} through the worker's "
                              "relay")
    found.left_out, found.secrets = checked.left_out, checked.secrets
    return found


def claude_config(given: Given) -> dict[str, Any]:
    """Claude Code's ``--mcp-config`` file."""
    servers: dict[str, Any] = {
        name: {"type": "stdio", "command": c.command, "args": c.args, "env": c.env}
        for name, c in given.local.items()}
    servers.update({name: {"type": "http", "url": url,
                           "headers": {"Authorization": f"Bearer {given.token}"}}
                    for name, url in given.remote.items()})
    return {"mcpServers": servers}


def codex_overrides(given: Given, token_variable: str) -> list[str]:
    """Codex CLI's ``-c`` overrides (TOML values) declaring the servers; a remote server's
    bearer token is read from ``token_variable``."""
    out: list[str] = []
    for name, c in given.local.items():
        key = f"mcp_servers.{name}"
        out += [f"{key}.command={json.dumps(c.command)}", f"{key}.args={json.dumps(c.args)}",
                f"{key}.tool_timeout_sec={c.timeout:g}",
                *(f"{key}.env.{k}={json.dumps(v)}" for k, v in c.env.items() if BARE_KEY.match(k))]
    for name, url in given.remote.items():
        key = f"mcp_servers.{name}"
        out += [f"{key}.url={json.dumps(url)}",
                f"{key}.bearer_token_env_var={json.dumps(token_variable)}"]
    return out
