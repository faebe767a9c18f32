"""An agent CLI run from its preset: the spec in, the CLI's whole session into the transcript,
and its spend as the CLI reported it. The CLI reaches its model and remote MCP servers through
the job's relay (``relay.py``): the sandbox holds the job's token, never a key or secret."""

from __future__ import annotations

import base64
import time
from dataclasses import replace

from bot import metrics
from bot.executor.agent.cli_mcp import CliServers, Given
from bot.executor.agent.external import SPEC_FILE, ExternalAgent
from bot.executor.agent.loop import AgentResult
from bot.executor.agent.presets import SESSION_FILE, Endpoint, Preset, Tally
from bot.executor.agent.relay import JobRelay, Upstreams, origin
from bot.executor.agent.tools import clip
from bot.executor.agent.transcript import Transcript
from bot.executor.sandbox import Sandbox
from bot.executor.sandbox.proxy_server import RELAY
from bot.jobs.spend import Budget, Spend

CHUNK = 45_000  # bytes read back per command: base64 of it stays under the output cap
MAX_SESSION = 16 << 20  # bytes of a session kept in the transcript
NOT_INSTALLED = ("{title} is not installed in the job's sandbox image (`{program}`: command not "
                 "found); deploy/sandbox/build.sh --flavour agents builds one that has it")


class CliAgent(ExternalAgent):
    """Runs ``preset``'s CLI in the sandbox under the job's wall-time budget, with the
    repository's MCP servers ``mcp``; the sandbox may reach ``hosts`` and the job's relay."""

    def __init__(self, preset: Preset, endpoint: Endpoint, budget: Budget,
                 transcript: Transcript, hosts: list[str] | None = None,
                 mcp: CliServers | None = None) -> None:
        super().__init__(preset.command(endpoint, SPEC_FILE), [], budget, transcript)
        self.preset, self.endpoint = preset, endpoint
        self.hosts, self.mcp = list(hosts or []), mcp or CliServers()

    async def run(self, spec: str, sandbox: Sandbox) -> AgentResult:
        upstreams = Upstreams(origin(self.endpoint.base_url), self.endpoint.key,
                              self.mcp.remote, self.mcp.secrets)
        async with JobRelay(upstreams) as relay:
            endpoint = replace(self.endpoint, base_url=relay.endpoint(self.endpoint.base_url),
                               key=relay.token)
            given = Given(self.mcp.local, {n: relay.mcp_url(n) for n in self.mcp.remote},
                          relay.token)
            self.command = self.preset.command(endpoint, SPEC_FILE, given)
            await sandbox.set_egress([*self.hosts, RELAY + relay.address])
            return await self.session(spec, sandbox, endpoint, relay.token)

    async def session(self, spec: str, sandbox: Sandbox, endpoint: Endpoint, token: str
                      ) -> AgentResult:
        """The CLI's run at ``endpoint``; ``token`` is shown nowhere."""
        env, started = self.preset.env(endpoint), time.monotonic()
        self.transcript.write("external", preset=self.preset.name,
                              command=self.command.replace(token, "[job token]"),
                              env=sorted(env))
        result = await sandbox.exec(
            f"rm -f {SESSION_FILE}; cat > {SPEC_FILE} && {{ {self.command}\n}} < /dev/null",
            timeout=self.budget.max_wall_seconds, env=env, stdin=spec.encode())
        session, cut = await read_back(sandbox, SESSION_FILE)
        tally = self.preset.tally(session, result.stdout)
        for event in tally.events:
            self.transcript.write("cli_event", preset=self.preset.name, event=event)
        if cut:
            self.transcript.write("cli_event_cut", preset=self.preset.name, bytes_kept=cut)
        output = clip(result.stdout + ("\n" + result.stderr if result.stderr else ""), 4000)
        self.transcript.write("external_result", exit_code=result.exit_code, output=output,
                              timed_out=result.timed_out)
        spend = self.spend(tally)
        spend.started = started
        if result.timed_out:
            reason = f"time budget of {self.budget.max_wall_seconds:.0f}s used up"
            return AgentResult(False, output, reason, spend, "budget-exhausted")
        if result.exit_code == 127 and "command not found" in result.stderr:
            why = NOT_INSTALLED.format(title=self.preset.title, program=self.preset.program)
            return AgentResult(False, output, why, spend, "agent-error")
        if result.exit_code != 0 or tally.error:
            why = tally.error or f"{self.preset.title} {result.describe()}"
            return AgentResult(False, tally.summary or output, why, spend, "agent-error")
        return AgentResult(True, tally.summary.strip() or output.strip() or
                           "(the agent printed no summary)", "finished", spend)

    def spend(self, tally: Tally) -> Spend:
        """The CLI's tokens and dollars; a CLI that reports no dollars is priced here."""
        spend = Spend(steps=tally.steps, input_tokens=tally.input_tokens,
                      output_tokens=tally.output_tokens,
                      cached_tokens=min(tally.cached_tokens, tally.input_tokens),
                      cache_write_tokens=tally.cache_write_tokens)
        if tally.cost_usd is not None:
            spend.cost_usd = tally.cost_usd
        else:
            b = self.budget
            cached_price = b.price_in if b.price_cached_in is None else b.price_cached_in
            spend.cost_usd = ((tally.input_tokens - spend.cached_tokens) * b.price_in +
                              spend.cached_tokens * cached_price +
                              tally.output_tokens * b.price_out) / 1e6
        metrics.TOKENS.labels("input").inc(spend.input_tokens)
        metrics.TOKENS.labels("output").inc(spend.output_tokens)
        metrics.DOLLARS.inc(spend.cost_usd)
        return spend


async def read_back(sandbox: Sandbox, path: str) -> tuple[str, int]:
    """A file the CLI wrote in the sandbox, read in pieces that pass the output cap (a piece
    the cap cut short counts as far as it came); and, when it was longer than MAX_SESSION,
    how many bytes of it were kept (else 0)."""
    data = bytearray()
    while len(data) < MAX_SESSION:
        got = await sandbox.exec(f"tail -c +{len(data) + 1} {path} 2>/dev/null | "
                                 f"head -c {CHUNK} | base64 -w0", timeout=60)
        if not got.ok:
            break
        encoded = got.stdout.strip()
        piece = base64.b64decode(encoded[:len(encoded) // 4 * 4])
        data += piece
        if not piece or (not got.truncated and len(piece) < CHUNK):
            return data.decode("utf-8", "replace"), 0
    return data.decode("utf-8", "replace"), len(data) if len(data) >= MAX_SESSION else 0
