"""External agent CLIs (Claude Code, Codex CLI, aider, mini-swe-agent...) run inside the sandbox.

The trade-off, stated plainly: such an agent calls its model itself, so its container needs the
network and the key named in ``env``. The built-in agent needs neither.
"""

from __future__ import annotations

import os
import shlex

from bot.executor.agent.loop import AgentResult
from bot.executor.agent.tools import clip
from bot.executor.agent.transcript import Transcript
from bot.executor.sandbox import Sandbox
from bot.jobs.spend import Budget, Spend

SPEC_FILE = "/tmp/handoff-spec.md"


class ExternalAgent:
    """Runs ``command`` (``{spec_file}`` is replaced) under the job's wall-time budget."""

    def __init__(self, command: str, env_names: list[str], budget: Budget,
                 transcript: Transcript) -> None:
        self.command, self.env_names = command, env_names
        self.budget, self.transcript = budget, transcript

    async def run(self, spec: str, sandbox: Sandbox) -> AgentResult:
        spend = Spend()
        env = {name: os.environ[name] for name in self.env_names if name in os.environ}
        command = self.command.replace("{spec_file}", shlex.quote(SPEC_FILE))
        self.transcript.write("external", command=command, env=sorted(env))
        # The spec is written in the same command that runs the agent: a sandbox's /tmp may
        # not outlive one command (bubblewrap gives each command a fresh one).
        result = await sandbox.exec(f"cat > {SPEC_FILE} && {{ {command}\n}} < /dev/null",
                                    timeout=self.budget.max_wall_seconds, env=env,
                                    stdin=spec.encode())
        spend.steps = 1
        output = clip(result.stdout + ("\n" + result.stderr if result.stderr else ""), 4000)
        self.transcript.write("external_result", exit_code=result.exit_code, output=output,
                              timed_out=result.timed_out)
        if result.timed_out:
            reason = f"time budget of {self.budget.max_wall_seconds:.0f}s used up"
            return AgentResult(False, output, reason, spend, "budget-exhausted")
        if result.exit_code != 0:
            return AgentResult(False, output, f"the agent command {result.describe()}", spend,
                               "agent-error")
        return AgentResult(True, output.strip() or "(the agent printed no summary)", "finished",
                           spend)
