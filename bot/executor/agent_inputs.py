"""What the agent gets beside its spec: the repository's MCP servers' tools (local ones in the
job's sandbox, remote ones through the allowlist; an agent CLI gets them in its own
configuration) and the issue's images; the PR lists both under the inputs the agent saw."""

from __future__ import annotations

from typing import Any

from bot.config import Settings
from bot.executor.agent.cli_mcp import CliServers, for_cli
from bot.executor.agent.mcp import McpTools, connect
from bot.executor.agent.mcp.secrets import SecretLookup, stored_secrets
from bot.executor.agent.presets import preset_for
from bot.executor.images import Caps, fetch_all, size
from bot.executor.run import Run
from bot.executor.sandbox import Sandbox
from bot.executor.steps import Prepared
from bot.github.registration import web_url
from bot.reporter import wording
from bot.reporter.markdown import code


def saw(run: Run, p: Prepared, lines: list[str]) -> None:
    """Add ``lines`` to the inputs the agent saw, as the PR and the record list them."""
    p.inputs.seen.extend(lines)
    run.record.inputs.seen = list(p.inputs.seen)


async def mcp_tools(run: Run, p: Prepared, box: Sandbox, settings: Settings
                    ) -> McpTools | CliServers | None:
    """The tools of ``.github/handoff.yml``'s ``mcp:`` servers for the built-in agent, or the
    servers for a CLI preset that takes them; None when there are none, or the agent takes
    none (the PR says so)."""
    servers = p.config.mcp
    if not servers:
        return None
    preset = preset_for(p.config.agent, settings.agent)
    if settings.agent_command or (preset and not preset.takes_mcp):
        agent = preset.title if preset and not settings.agent_command else \
            "the configured agent command"
        saw(run, p, [wording.MCP_NOT_FOR_CLI.format(agent=agent)])
        return None
    allow = [*settings.egress_allow, *p.config.network.allow]
    found: McpTools | CliServers
    if preset:
        found = await for_cli(servers, preset.title, allow, settings.egress_allow_private,
                              secrets_for(run, settings))
    else:
        found = await connect(servers, box, allow, settings.egress_allow_private,
                              secrets_for(run, settings))
    saw(run, p, found.seen + [f"{item} (left out)" for item in found.left_out])
    return found


def secrets_for(run: Run, settings: Settings) -> SecretLookup:
    """The job's secrets by name (the store, else the worker's environment)."""
    return stored_secrets(run.store.engine, settings.secrets_key.get_secret_value()
                          if settings.secrets_key else None, run.job.installation_id,
                          run.job.repo)


async def images(run: Run, p: Prepared, settings: Settings
                 ) -> tuple[list[dict[str, Any]], str]:
    """The issue's images for the model's first request (as ``Image.message_part``), and a
    note for the spec when some or all of them are not shown (a text-only model)."""
    refs = p.inputs.images
    if not refs:
        return [], ""
    plural = "s" if len(refs) > 1 else ""
    if settings.agent_command:  # the CLI reads the spec only
        saw(run, p, [wording.IMAGES_FOR_CLI.format(count=len(refs), s=plural)])
        return [], ""
    if not settings.model_images:
        model = p.config.model or settings.model_name
        saw(run, p, [wording.IMAGES_TEXT_ONLY.format(count=len(refs), s=plural,
                                                     model=code(model))])
        return [], wording.TEXT_ONLY_NOTE.format(count=len(refs), s=plural)
    folder = settings.data_dir / "transcripts" / f"job-{run.job.id}-images"
    caps = Caps(settings.max_images, int(settings.max_image_mb * 1_000_000))
    got, left_out = await fetch_all(refs, web_url(settings.github_url), await run.gh.token(),
                                    folder, caps)
    saw(run, p, [wording.IMAGE_SEEN.format(number=i.ref.number, source=i.ref.source,
                                           media_type=i.media_type, size=size(i.size))
                 for i in got] + [f"{line} (left out)" for line in left_out])
    shown = {i.ref.number for i in got}
    missing = [str(r.number) for r in refs if r.number not in shown]
    return [i.message_part() for i in got], \
        wording.NOT_SHOWN_NOTE.format(numbers=", ".join(missing)) if missing else ""
