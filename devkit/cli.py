"""The ``handoff-dev`` command: the dev kit's servers and the demo, never part of the product.

- ``handoff-dev simulator``: the local GitHub (REST, App auth, git over HTTP, webhooks);
- ``handoff-dev model-server``: the scripted model server (OpenAI and Anthropic wire formats);
- ``handoff-dev demo``: a local GitHub, a scripted model, Handoff and a sandbox, end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path

from bot import logs
from bot.config import Settings
from bot.executor.sandbox.podman_conf import use_default_conf
from bot.jobs.states import State
from bot.server import running, stop_event
from devkit.scripted import ScriptedModel
from devkit.simulator import Simulator
from devkit.simulator.outage import served
from devkit.stack import stack


async def dev_simulator(args: argparse.Namespace) -> None:
    """Run the GitHub simulator with one App installation and, optionally, a demo repository."""

    root = Path(args.root).resolve()
    sim = Simulator(root, webhook_url=args.webhook_url, webhook_secret=args.webhook_secret)
    key_path = root / "app-private-key.pem"
    root.mkdir(parents=True, exist_ok=True)
    key_path.write_text(sim.private_key)
    key_path.chmod(0o600)
    async with served(sim, "127.0.0.1", args.port) as url:
        if args.demo_repo:
            sim.add_repo(args.demo_repo, {"README.md": "# demo\n"})
        print(f"GitHub simulator at {url}\n  HANDOFF_GITHUB_URL={url}\n"
              f"  HANDOFF_APP_ID={sim.world.app_id}\n  HANDOFF_PRIVATE_KEY={key_path}\n"
              f"  control API: {url}/_sim/... (repos, issues, label, comment, review, faults, "
              f"outage)",
              flush=True)
        await stop_event().wait()


async def dev_model(args: argparse.Namespace) -> None:
    """Run the scripted model server with a JSON script."""

    script = json.loads(Path(args.script).read_text()) if args.script else []
    model = ScriptedModel(script, repeat_last=args.repeat_last,
                          per_conversation=args.per_conversation)
    async with running(model.app, "127.0.0.1", args.port) as url:
        print(f"scripted model at {url}/v1 (OpenAI) and {url} (Anthropic)", flush=True)
        await stop_event().wait()


DEMO_REPO = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    ".github/handoff.yml": "test_command: python3 -m pytest -q -p no:cacheprovider\n",
}
DEMO_SCRIPT = [
    {"tool": "view", "args": {"path": "calc.py"}},
    {"tool": "edit", "args": {"path": "calc.py", "old_text": "return a - b",
                              "new_text": "return a + b"}},
    {"tool": "bash", "args": {"command": "python3 -m pytest -q -p no:cacheprovider"}},
    {"tool": "finish", "args": {"summary": "add() subtracted; it now adds.\n\n"
                                           "1. add(2, 3) returns 5: test_add passes."}},
]


async def demo(data_dir: Path) -> int:
    """Everything on this machine: a local GitHub, a scripted model, Handoff and a sandbox."""

    async with stack(data_dir, DEMO_SCRIPT) as s:
        s.sim.add_repo("acme/calc", DEMO_REPO)
        issue = s.sim.open_issue("acme/calc", "add() subtracts",
                                 "add(2, 3) gives -1.\n\n- [ ] add(2, 3) returns 5", "acme")
        print(f"Labeled acme/calc#{issue.number} `agent` on the local GitHub at "
              f"{s.sim.base_url}; waiting for the pull request...", flush=True)
        s.sim.label_issue("acme/calc", issue.number, "agent", "acme")
        job = await s.wait_job(lambda j: True, timeout=300)
        repo = s.sim.get_repo("acme/calc")
        print(f"\njob {job.id}: {job.state} {job.category} {logs.printable(job.reason)}".rstrip())
        for item in repo.issues.values():
            if item.pull:
                print(logs.printable(f"\n--- pull request #{item.number}: {item.title} "
                                     f"({item.pull.head} -> {item.pull.base})\n{item.body}",
                                     keep="\t\n"))
                for comment in item.comments:
                    print(logs.printable(f"--- comment on #{item.number}\n{comment.body}",
                                         keep="\t\n"))
        return 0 if job.state == State.SUCCEEDED else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="handoff-dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_sim = sub.add_parser("simulator", help="run the local GitHub simulator")
    p_sim.add_argument("--port", type=int, default=9000)
    p_sim.add_argument("--root", default="./handoff-data/simulator")
    p_sim.add_argument("--webhook-url", default="http://127.0.0.1:8000/webhook")
    p_sim.add_argument("--webhook-secret", default="")
    p_sim.add_argument("--demo-repo", default="", help="create this repository (owner/name)")
    p_model = sub.add_parser("model-server", help="run the scripted model server")
    p_model.add_argument("--port", type=int, default=9100)
    p_model.add_argument("--script", help="JSON file with a list of turns (devkit/scripted.py)")
    p_model.add_argument("--repeat-last", action="store_true")
    p_model.add_argument("--per-conversation", action="store_true",
                         help="each conversation replays the script from its start")
    p_demo = sub.add_parser("demo", help="label an issue on a local GitHub and watch the PR")
    p_demo.add_argument("--dir", type=Path, default=Path("./handoff-data/demo"))
    args = parser.parse_args(argv)
    settings = Settings()
    use_default_conf(settings.sandbox)
    logs.setup(settings.log_level.upper(), settings.log_format)
    if args.command == "demo":
        shutil.rmtree(args.dir, ignore_errors=True)
        args.dir.mkdir(parents=True)
        return asyncio.run(demo(args.dir.resolve()))
    asyncio.run(dev_simulator(args) if args.command == "simulator" else dev_model(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
