"""Per-repository settings from ``.github/handoff.yml`` on the default branch, validated with
clear errors."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.config import AgentName
from bot.jobs.secrets import SECRET_NAME
from bot.reporter.markdown import code, inline

CONFIG_PATH = ".github/handoff.yml"


class RepoBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(None, ge=1, le=500)
    max_tokens: int | None = Field(None, ge=1000)
    max_cost_usd: float | None = Field(None, gt=0, le=100)
    max_wall_seconds: float | None = Field(None, gt=0, le=6 * 3600)


class RepoNetwork(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(default_factory=list, description="Hosts every setup step may "
                             "reach besides the server's list: `name`, `name:port`, `*.suffix`.")
    agent: list[str] = Field(default_factory=list, description="Hosts the agent's own commands "
                             "may reach (opt in; none by default); every host refused is "
                             "listed in the pull request.")


class SetupStep(BaseModel):
    """One named setup step: a shell command run in the sandbox before the agent."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Shown in the transcript, "
                      "the dashboard and, when it fails, on GitHub.")
    run: str = Field(min_length=1, description="The shell command (bash) the step runs.")
    secrets: list[str] = Field(default_factory=list, description="Names of secrets stored "
                               "on the server (`handoff secrets set`) given to this step as "
                               "environment variables; never to the agent.")
    network: list[str] = Field(default_factory=list, description="Hosts this step may reach "
                               "besides the server's list and `network.allow`.")

    @field_validator("secrets")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not SECRET_NAME.match(n)]
        if bad:
            raise ValueError(f"secret names are environment variable names (A-Z, 0-9, _): "
                             f"{', '.join(bad)}")
        return names


class RepoCI(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_fixes: int = Field(3, ge=0, le=20, description="Rounds of fixing the repository's "
                           "own failing checks per pull request (0: never).")
    wait_minutes: float = Field(30, gt=0, le=24 * 60, description="How long a fix waits for "
                                "the commit's other checks to finish before it goes on "
                                "without them.")


SERVER_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]{0,23}$"  # fits the tool names mcp__<server>__<tool>
SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class McpServer(BaseModel):
    """One MCP server: a local one (``command``), run inside the sandbox, or a remote one
    (``url``, streamable HTTP), reached from the worker if its host is on the allowlist (an
    agent CLI reaches it through the job's relay on the worker)."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(None, description="A local (stdio) server's program, run "
                                "inside the sandbox, in /workspace, with no network and no "
                                "secrets.")
    args: list[str] = Field(default_factory=list, description="The program's arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="Variables for a local "
                                "server (plain values, never secrets).")
    url: str | None = Field(None, description="A remote server's streamable HTTP endpoint "
                            "(https://...); its host must be on the egress allowlist "
                            "(`network.allow` or the server's).")
    secrets: list[str] = Field(default_factory=list, description="Names of the secrets a "
                               "remote server's headers use as `${NAME}`.")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers for a "
                                    "remote server, e.g. `Authorization: Bearer ${TOKEN}`.")
    timeout: float = Field(60, gt=0, le=600, description="Seconds one call may take.")

    @model_validator(mode="after")
    def one_kind(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either `command` (a local server) or `url` (a remote one)")
        if self.command is not None and (self.secrets or self.headers):
            raise ValueError("a local server runs in the sandbox beside the agent, where "
                             "secrets never go: `secrets` and `headers` are for `url` servers")
        if self.url is not None and (self.args or self.env):
            raise ValueError("`args` and `env` are for `command` servers")
        if self.url is not None and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError("`url` must be an http(s) URL")
        used = {m for v in self.headers.values() for m in SECRET_REF.findall(v)}
        if unknown := sorted(used - set(self.secrets)):
            raise ValueError(f"headers use secrets not listed in `secrets`: "
                             f"{', '.join(unknown)}")
        return self


class RepoConfig(BaseModel):
    """Settings a repository gives its own jobs in `.github/handoff.yml` (default branch)."""

    model_config = ConfigDict(extra="forbid")

    templates: dict[str, str] = Field(default_factory=dict,
                                      description="Issue label to template name.")
    test_command: str | None = Field(None, description="Runs before and after the agent.")
    setup_command: str | None = Field(None, description="Runs before the agent; may reach "
                                      "the allowed hosts through the egress proxy (one step; "
                                      "`setup` names several).")
    setup: list[SetupStep] | None = Field(None, description="Named steps run in order before "
                                          "the agent, each with its own secrets and hosts.")
    image: str | None = Field(None, description="Sandbox image for this repository.")
    model: str | None = Field(None, description="Model name for this repository.")
    agent: AgentName | None = Field(
        None, description="The agent: built-in, or a CLI preset (claude-code, codex, aider) run "
        "in the sandbox image of the agents flavour; default, the server's.")
    draft: bool | None = Field(None, description="Open pull requests as drafts.")
    budget: RepoBudget = Field(default_factory=RepoBudget)
    network: RepoNetwork = Field(default_factory=RepoNetwork)
    ci: RepoCI = Field(default_factory=RepoCI)
    mcp: dict[Annotated[str, StringConstraints(pattern=SERVER_NAME)], McpServer] = Field(
        default_factory=dict, description="MCP servers whose tools the agent gets beside its "
        "own, as mcp__<server>__<tool> (the built-in agent, Claude Code, Codex CLI; not aider).",
        max_length=8)

    @model_validator(mode="after")
    def _one_setup(self) -> RepoConfig:
        if self.setup is not None and self.setup_command is not None:
            raise ValueError("give `setup` (steps) or `setup_command`, not both")
        names = [step.name for step in self.setup or []]
        if len(set(names)) != len(names):
            raise ValueError("setup step names must differ from each other")
        return self

    def setup_steps(self) -> list[SetupStep] | None:
        """The configured setup as steps (``setup_command`` is one step named ``setup``);
        None when the repository names none (a guessed install may run)."""
        if self.setup is not None:
            return self.setup
        if self.setup_command is None:
            return None
        return [SetupStep(name="setup", run=self.setup_command)] if self.setup_command else []


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``.github/handoff.yml`` (published as deploy/handoff.schema.json
    for editors: ``# yaml-language-server: $schema=...``)."""
    schema = RepoConfig.model_json_schema()
    schema["properties"]["_extends"] = {
        "type": "string", "title": "Extends",
        "description": "A repository of the same owner whose .github/handoff.yml these "
                       "settings build on (default: the owner's .github repository, when "
                       "this repository has no file)."}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Handoff repository settings (.github/handoff.yml)", **schema}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


class RepoConfigError(Exception):
    """The repository's configuration is wrong; the message says where and why."""


SETUP_KEYS = {"setup", "setup_command"}
ORG_REPO = ".github"  # an organisation's defaults: .github/handoff.yml in its .github repo


def extends_target(text: str | None) -> tuple[str, bool] | None:
    """Which repository's settings this file builds on, and whether it said so itself:
    ``_extends: NAME`` (Probot's key), or the owner's ``.github`` repository when the
    repository has no file. None: the file stands alone."""
    if text is None:
        return ORG_REPO, False
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None  # parse_repo_config names the error
    if isinstance(data, dict) and isinstance(data.get("_extends"), str):
        return data["_extends"].strip(), True
    return None


def with_defaults(own: str | None, defaults: str) -> str:
    """The repository's settings over its organisation's: mappings merged key by key, any
    other value the repository's own; ``_extends`` itself dropped."""
    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
        return over

    try:
        base = yaml.safe_load(defaults) or {}
    except yaml.YAMLError as exc:
        raise RepoConfigError(f"the organisation's `{CONFIG_PATH}` is not valid YAML: "
                              f"{exc}") from exc
    if not isinstance(base, dict):
        raise RepoConfigError(f"the organisation's `{CONFIG_PATH}` must be a mapping")
    mine = (yaml.safe_load(own) or {}) if own is not None else {}
    if isinstance(mine, dict) and SETUP_KEYS & mine.keys():  # the repository's setup, whole
        base = {k: v for k, v in base.items() if k not in SETUP_KEYS}
    merged = merge({k: v for k, v in base.items() if k != "_extends"},
                   {k: v for k, v in mine.items() if k != "_extends"})
    return yaml.safe_dump(merged, sort_keys=False)


def parse_repo_config(text: str | None, known_templates: list[str]) -> RepoConfig:
    """Validate the file's text (read from git objects of the default branch, never from a
    work tree the agent wrote); None, an absent file, means defaults."""
    if text is None:
        return RepoConfig()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RepoConfigError(f"`{CONFIG_PATH}` is not valid YAML: {inline(exc)}") from exc
    if not isinstance(data, dict):
        raise RepoConfigError(f"`{CONFIG_PATH}` must be a mapping of settings")
    try:
        config = RepoConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            (f"{code('.'.join(str(p) for p in e['loc']))}: " if e["loc"] else "")
            + inline(str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors())
        raise RepoConfigError(f"`{CONFIG_PATH}` has errors: {problems}") from exc
    unknown = sorted(set(config.templates.values()) - set(known_templates))
    if unknown:
        raise RepoConfigError(f"`{CONFIG_PATH}` names templates that do not exist: "
                              f"{', '.join(map(code, unknown))} "
                              f"(known: {', '.join(known_templates)})")
    return config
