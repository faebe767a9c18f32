"""Settings, read from the environment (prefix ``HANDOFF_``) and a ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
# The top-level prompts/, shipped in the package (bot/prompts links to it in a checkout).
PROMPTS = (Path(__file__).parent / "prompts").resolve()
# Package registries setup commands need (pip, npm, Go, Cargo, Debian).
DEFAULT_EGRESS = ("pypi.org", "files.pythonhosted.org", "registry.npmjs.org",
                  "proxy.golang.org", "sum.golang.org", "crates.io", "static.crates.io",
                  "index.crates.io", "deb.debian.org")

# The agents a job can have: the built-in one or a CLI preset (bot/executor/agent/presets.py).
AgentName = Literal["built-in", "claude-code", "codex", "aider"]


class Settings(BaseSettings):
    """Everything Handoff can be told; each field is ``HANDOFF_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="HANDOFF_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        hide_input_in_errors=True,  # a bad secret (a URL with a password) is never echoed
    )

    app_id: str | None = Field(None, description="GitHub App id (or client id) used as JWT issuer.")
    private_key: SecretStr | None = Field(
        None, description="The App's private key: the PEM text itself, or a path to a PEM file."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Secret GitHub signs webhook deliveries with."
    )
    github_url: str = Field(
        "https://api.github.com",
        description="REST API base URL; https://HOST/api/v3 for GitHub Enterprise Server.",
    )
    github_write_interval: float = Field(
        1.0, ge=0, description="Seconds between writes per installation (GitHub asks for 1).")
    github_timeout: float = Field(30.0, gt=0, description="Seconds one GitHub call may take.")
    app_slug: str = Field("handoff", description="The App's slug; its bot login is <slug>[bot].")
    data_dir: Path = Field(Path("./handoff-data"), description="Where the database, mirrors, "
                           "workspaces and transcripts live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default a SQLite file in data_dir. "
        "postgresql+asyncpg://... to share work between machines."
    )
    trigger_label: str = Field("agent", description="Label that hands an issue to the agent.")
    concurrency: int = Field(2, ge=1, description="Jobs one worker runs at once.")
    lease_seconds: float = Field(60.0, gt=0, description="How long a claim lasts unrenewed.")
    heartbeat_seconds: float = Field(15.0, gt=0, description="How often a running job renews.")
    report_retry_seconds: float = Field(
        30.0, gt=0, description="First wait before a failed report is tried again (doubles "
        "per try, up to an hour).")
    github_away_seconds: float = Field(
        30.0, gt=0, description="First wait before a job that could not reach GitHub (refused "
        "connections, timeouts, 5xx past the retries) goes on; doubles per deferral up to ten "
        "minutes. Work done before is kept: the agent does not run again.")
    ci_hold_seconds: float = Field(
        15.0, ge=0, description="How long a CI fix waits on a worker for the commit's pending "
        "checks before it gives its slot back and looks again later (up to `ci.wait_minutes` "
        "in all).")
    shutdown_grace: float = Field(
        90.0, ge=0, description="On SIGTERM, how long running jobs may go on to finish and "
        "report; those still running then are handed back (within stop_seconds). With "
        "stop_seconds, keep it under the service manager's stop timeout (systemd's "
        "TimeoutStopSec, the pod's terminationGracePeriodSeconds: 120 in deploy/).")
    stop_seconds: float = Field(
        20.0, gt=0, description="On SIGTERM, after the shutdown grace, how long running jobs "
        "get to hand themselves back.")
    poll_seconds: float = Field(1.0, gt=0, description="How often an idle worker looks for work.")
    max_attempts: int = Field(3, ge=1, description="Claims of one job before it fails for good.")
    host: str = Field("127.0.0.1", description="Address `handoff serve` listens on.")
    port: int = Field(8000, description="Port `handoff serve` listens on.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: str = Field("text", pattern="^(text|json)$", description="text, or json: one "
                            "JSON object a line with delivery, job, repo and stage.")
    metrics_port: int | None = Field(
        None, description="`handoff serve` and `handoff worker` serve GET /metrics on this port "
        "(never on PORT, the public webhook's); none without it.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address GET /metrics listens on: loopback, so only this "
        "machine scrapes it; a pod's own address where Prometheus scrapes from another pod.")
    max_body_bytes: int = Field(25 * 1024 * 1024, description="GitHub's payload cap.")
    delivery_retention_days: float = Field(
        30.0, ge=0, description="Days a delivery that started no job is kept for duplicate "
        "detection; GitHub redelivers for 3 days at most (7 on GHES). 0 keeps all.")

    sandbox: str = Field("podman", description="Sandbox backend: podman, docker, bubblewrap "
                         "or kubernetes (local: tests only, isolates nothing).")
    sandbox_image: str = Field("handoff-sandbox:dev", description="Container image for jobs.")
    sandbox_memory_mb: int = Field(2048, description="Memory limit of a sandbox.")
    sandbox_cpus: float = Field(2.0, description="CPU limit of a sandbox.")
    sandbox_pids: int = Field(512, description="Process limit of a sandbox.")
    command_timeout: float = Field(600.0, description="Seconds one command in a sandbox may run.")
    output_cap_bytes: int = Field(64 * 1024, description="Bytes of output kept per command.")
    workspace_max_mb: int = Field(
        2048, ge=1, description="Disk a job's workspace may use; a command that grows it past "
        "this is killed and the job fails as disk-limit.")
    workspace_volume: Literal["auto", "off"] = Field(
        "auto", description="auto: a worker running as root puts each work tree on a file "
        "system of its own of WORKSPACE_MAX_MB (plus a margin), an ext4 image on a loop "
        "device, so a sandbox cannot write past it; off (or not root): the disk watchdog "
        "alone, which may let a fast writer overshoot before it acts.")
    warm_cache_mb: int = Field(
        4096, ge=0, description="Disk the warm environments may use in all (what successful "
        "setups prepared, kept under data_dir/warm so later jobs skip the setup); the least "
        "recently used go first; 0 turns the cache off.")
    warm_cache_hours: float = Field(
        12.0, gt=0, description="How long a kept environment is used after it was made.")
    egress_allow: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EGRESS),
        description="Hosts the setup command may reach through the egress proxy (`name`, "
        "`name:port`, `*.suffix`); a repository adds its own with `network.allow`.")
    egress_allow_private: bool = Field(
        False, description="Let the egress proxy connect to addresses that are not globally "
        "routable: loopback, private, link-local, 100.64.0.0/10 (for tests; never on a shared "
        "host).")
    egress_upstream_proxy: SecretStr = Field(
        SecretStr(""), description="An HTTP proxy the egress proxy reaches allowed hosts "
        "through (`http://[user:password@]host:port`, e.g. a corporate proxy): it still "
        "checks the allowlist, the TLS name and the Host header itself, then asks this proxy "
        "with CONNECT, which resolves the name; the non-public-address check does not apply "
        "(the operator chose this proxy). Never logged.")
    extra_ca_certs: Path | None = Field(
        None, description="A PEM file of CA certificates every sandbox trusts beside the "
        "public ones (an intercepting proxy's or a private mirror's): pip, npm, git, curl, Go "
        "and Python in the sandbox are pointed at a bundle of both, mounted read-only.")
    pip_index_url: str = Field("", description="A Python package index (a mirror such as "
                               "devpi or Artifactory) for setup commands: PIP_INDEX_URL; its "
                               "host is allowed through the egress proxy.")
    npm_registry: str = Field("", description="An npm registry for setup commands "
                              "(npm_config_registry); its host is allowed too.")
    secrets_key: SecretStr | None = Field(
        None, description="The key that seals the secrets setup steps are given (`handoff "
        "secrets set`): 32 bytes in URL-safe base64, made with `handoff secrets key`. Keep it "
        "outside the database and its backups; without it no secret is stored or given.")
    reap_seconds: float = Field(60.0, gt=0, description="How often a worker removes sandboxes "
                                "whose job's lease nobody holds.")
    kubernetes_namespace: str = Field(
        "handoff-sandboxes", description="Namespace of the sandbox pods and their "
        "NetworkPolicies (sandbox kubernetes); the worker's Role must allow pods, pods/exec and "
        "networkpolicies there.")
    kubernetes_proxy_host: str = Field(
        "", description="Address sandbox pods reach this worker's egress proxy at: the worker "
        "pod's IP (the downward API's status.podIP); default, what the host name resolves to.")
    kubernetes_proxy_ports: str = Field(
        "40000-40999", pattern=r"^\d+-\d+$", description="Ports (first-last) the worker's "
        "egress proxies listen on, one per sandbox; the worker's NetworkPolicy lets sandbox "
        "pods in on these.")
    kubernetes_deadline_seconds: int = Field(
        0, ge=0, description="activeDeadlineSeconds of a sandbox pod; 0: MAX_WALL_SECONDS plus "
        "three COMMAND_TIMEOUTs (setup, tests before and after) plus 5 minutes.")
    kubernetes_runtime_class: str = Field(
        "", description="runtimeClassName of sandbox pods (e.g. gvisor or kata, where the "
        "cluster has them); default the cluster's runtime.")

    model_provider: str = Field("openai", description="openai (any compatible API) or anthropic.")
    model_base_url: str = Field("https://api.openai.com/v1", description="Model API base URL.")
    model_name: str = Field("gpt-4.1", description="Model to ask.")
    model_api_key: SecretStr | None = Field(None, description="Model API key; never sandboxed.")
    model_timeout: float = Field(120.0, description="Seconds one model call may take.")
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Per model: dollars per million input and output tokens; added to the "
        "defaults for common models in bot/prices.py (and overrides them).",
    )
    max_steps: int = Field(40, description="Agent steps per job.")
    max_tokens: int = Field(2_000_000, description="Input plus output tokens per job.")
    max_cost_usd: float = Field(5.0, description="Dollars per job.")
    max_wall_seconds: float = Field(3600.0, description="Wall time of the agent per job.")
    keep_observations: int = Field(5, ge=0, description="Newest tool outputs the built-in "
                                   "agent sees whole; older ones become a one-line note (0: all).")
    model_images: bool = Field(True, description="The model takes images: screenshots in the "
                               "issue and steering comments reach it; false (a text-only "
                               "model): it gets their alt text and a note instead.")
    max_images: int = Field(5, ge=0, le=20, description="Images given to the model per job.")
    max_image_mb: float = Field(3.75, gt=0, le=20, description="Size limit of one image (MB); "
                                "the images of a job together at most 10 MB.")

    agent_command: str | None = Field(
        None, description="Run this agent CLI in the sandbox instead of the built-in agent; "
        "{spec_file} is replaced by the spec's path. It may reach only the host of "
        "model_base_url (through the egress proxy) and gets the keys named in agent_env.")
    agent_env: list[str] = Field(default_factory=list, description="Environment variables "
                                 "passed into the sandbox for agent_command (e.g. its API key).")
    agent: AgentName = Field(
        "built-in", description="The agent of jobs whose repository names none (`agent:` in "
        ".github/handoff.yml): the built-in one, or a CLI preset run in the sandbox, pointed at "
        "model_base_url with model_api_key (claude-code: an Anthropic Messages endpoint; codex: "
        "OpenAI Responses; aider: OpenAI Chat Completions).")
    agent_image: str = Field("handoff-sandbox:agents", description="Sandbox image of jobs run "
                             "by a CLI preset, unless the repository names its own `image` "
                             "(deploy/sandbox/build.sh --flavour agents builds it).")
    sqlite_sync: Literal["full", "normal"] = Field(
        "full", description="SQLite only: `full` (a 202 means the delivery is on disk, even "
        "through a power cut) or `normal` (no fsync per commit: answers stay fast when "
        "sandboxes keep the disk busy; a power cut can lose the last seconds of deliveries).")
    worker_nice: int = Field(5, ge=0, le=19, description="How much lower the CPU priority "
                             "of the worker process `handoff serve` starts is, so webhooks are "
                             "answered first when the cores are busy.")
    loop_stall_ms: float = Field(1000.0, ge=0, description="Log where the event loop is stuck "
                                 "when it has not run for this many milliseconds (0: off).")
    status_interval: float = Field(5.0, description="Seconds between edits of a status comment.")
    prompts_dir: Path = Field(PROMPTS, description="Spec templates (Jinja2 Markdown); default "
                              "the ones shipped in the package.")
    template_labels: dict[str, str] = Field(
        default_factory=lambda: {
            "bug": "bug", "enhancement": "feature", "feature": "feature",
            "documentation": "docs", "docs": "docs", "refactor": "refactor", "tests": "tests",
        },
        description="Issue label to spec template.",
    )
    draft_prs: bool = Field(False, description="Open agent PRs as drafts.")
    dashboard_token: SecretStr | None = Field(
        None, description="Operators' admin token for the dashboard `handoff serve` shows at "
        "/jobs (log in with it, or send `Authorization: Bearer`; it sees every job); with "
        "neither it nor CLIENT_ID and CLIENT_SECRET set, the dashboard is off.")
    client_id: str | None = Field(
        None, description="The App's client id (Iv1... or Iv23...): the dashboard signs people "
        "in with GitHub (the App's OAuth web flow); each sees the jobs of the repositories "
        "they can read. `handoff setup` writes it.")
    client_secret: SecretStr | None = Field(
        None, description="The App's client secret, for that sign-in; `handoff setup` writes "
        "it.")
    session_hours: float = Field(8.0, gt=0, description="How long a dashboard sign-in lasts "
                                 "(at most as long as GitHub's user token).")
    repo_cache_seconds: float = Field(
        300.0, ge=0, description="How long the dashboard trusts a signed-in person's list of "
        "repositories before asking GitHub again.")
    public_url: str = Field("", description="Where Handoff is reached from outside "
                            "(https://handoff.example.com); PR bodies and status comments "
                            "then link to the job's dashboard page, {public_url}/jobs/{id}.")

    @field_validator("github_url", "model_base_url", "public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("egress_upstream_proxy")
    @classmethod
    def _upstream_proxy(cls, value: SecretStr) -> SecretStr:
        """``http://[user:password@]host:port`` or nothing; the error never repeats it."""
        url = value.get_secret_value().strip()
        if url:
            parts = urlsplit(url)
            try:
                port = parts.port
            except ValueError:
                port = None
            if parts.scheme != "http" or not parts.hostname or not port or \
                    parts.path not in ("", "/") or parts.query:
                raise ValueError("must be http://[user:password@]host:port")
        return SecretStr(url)

    @property
    def db_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'handoff.db').resolve()}"

    @property
    def kubernetes_deadline(self) -> int:
        """The sandbox pod's lifetime in seconds."""
        return self.kubernetes_deadline_seconds or int(
            self.max_wall_seconds + 3 * self.command_timeout + 300)

    @property
    def bot_login(self) -> str:
        return f"{self.app_slug}[bot]"

    def package_index_env(self) -> dict[str, str]:
        """The environment that points setup commands at the configured package mirrors."""
        env = {"PIP_INDEX_URL": self.pip_index_url, "npm_config_registry": self.npm_registry}
        return {k: v for k, v in env.items() if v}

    def package_index_hosts(self) -> list[str]:
        """The egress allowlist entries for the configured package mirrors."""
        urls = [urlsplit(u) for u in (self.pip_index_url, self.npm_registry) if u]
        return [f"{u.hostname}:{u.port}" if u.port else str(u.hostname) for u in urls]

    def secret_values(self) -> list[str]:
        """Every configured secret's value, for redaction wherever text leaves Handoff."""
        keys = [self.model_api_key, self.webhook_secret, self.private_key,
                self.dashboard_token, self.client_secret, self.secrets_key]
        values = [k.get_secret_value() for k in keys if k is not None]
        pem = self.private_key_pem() if self.private_key else None
        return [*values, *([pem] if pem else []),
                *(os.environ[name] for name in self.agent_env if name in os.environ)]

    def private_key_pem(self) -> str | None:
        """The PEM text, read from a file when the setting names one."""
        if self.private_key is None:
            return None
        value = self.private_key.get_secret_value()
        if "-----BEGIN" in value:
            return value.replace("\\n", "\n")
        return Path(value).expanduser().read_text()


def default(name: str) -> Any:
    """A setting's default as declared above: where a value type (an agent's budget, a
    sandbox's limits) needs one, it takes it from here rather than a copy."""
    return Settings.model_fields[name].default
