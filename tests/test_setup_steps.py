"""Setup steps end to end, through signed webhooks: a step that needs a secret installs from a
private package index (a real PEP 503 index on 127.0.0.1 that demands the token), the agent's
commands cannot see the secret anywhere (environment, files, /proc), and neither the pull
request, the comments, the transcript nor what the model was sent shows it in plain, base64 or
hex. A failing step ends the job on GitHub with its name and the end of its output."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import package_index, wheel

from bot.jobs.secrets import Secrets, new_key
from devkit.stack import Stack, stack

REPO = "acme/calc"
TOKEN = "idx-tok-5b1f0e9d7c3a4286"
KEY = new_key()
DASHBOARD = "dashboard-admin-token-0c8e"
FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    # unittest: bubblewrap's sandbox is the host's /usr, which may have no pytest.
    "test_calc.py": "import unittest\n\nimport privdep\nfrom calc import add\n\n\n"
                    "class T(unittest.TestCase):\n    def test_add(self):\n"
                    "        self.assertEqual(add(2, 3), 5)\n\n"
                    "    def test_dep(self):\n        self.assertEqual(privdep.ANSWER, 42)\n",
}
TESTS = "python3 -m unittest -v"
# The step installs with the token, and does what careless scripts do with one: prints it in
# three encodings and leaves it in files (a .netrc, an encoded copy) in the work tree.
INSTALL = (
    'pip install --no-cache-dir --target . --index-url '
    '"http://__token__:${INDEX_TOKEN}@127.0.0.1:PORT/simple/" privdep && '
    'echo "token is $INDEX_TOKEN" && printf %s "$INDEX_TOKEN" | base64 && '
    'printf %s "$INDEX_TOKEN" | od -An -tx1 | tr -d " \\n" && echo && '
    'printf "machine 127.0.0.1 login __token__ password %s\\n" "$INDEX_TOKEN" > .netrc && '
    'printf %s "$INDEX_TOKEN" | base64 > .token.b64 && cp .netrc ~/.netrc')
# What the agent runs to look for it: its environment, every process's, and those files.
LOOK = ("env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; "
        "cat .netrc .token.b64 ~/.netrc; ls -a; "
        "grep -r __token__ /workspace /tmp /var/tmp /dev/shm 2>/dev/null")
SCRIPT: list[dict[str, Any]] = [
    {"tool": "bash", "args": {"command": LOOK}},
    {"tool": "edit", "args": {"path": "calc.py", "old_text": "return a - b",
                              "new_text": "return a + b"}},
    {"tool": "bash", "args": {"command": TESTS}},
    {"tool": "finish", "args": {"summary": "add() adds now."}},
]


def forms(value: str) -> list[str]:
    """The secret as it could show: plain, hex, and base64 at each of the three offsets."""
    raw = value.encode()
    shown = [value, raw.hex(), raw.hex().upper()]
    for shift in range(3):
        whole = raw[shift:][:(len(raw) - shift) // 3 * 3]
        shown += [base64.b64encode(whole).decode(), base64.urlsafe_b64encode(whole).decode()]
    return shown


def assert_absent(where: str, text: str) -> None:
    for form in forms(TOKEN):
        assert form not in text, f"{where} shows the secret ({form!r})"


def config(port: int, *steps: str, agent_hosts: str = "") -> dict[str, str]:
    yml = f"test_command: {TESTS}\nsetup:\n" + "".join(steps).replace("PORT", str(port))
    if agent_hosts:
        yml += f"network:\n  agent: [{agent_hosts}]\n"
    return {**FILES, ".github/handoff.yml": yml}


def step(name: str, run: str, secrets: str = "", network: str = "") -> str:
    text = f"  - name: {name}\n    run: {json.dumps(run)}\n"
    text += f"    secrets: [{secrets}]\n" if secrets else ""
    return text + (f"    network: [\"{network}\"]\n" if network else "")


def everything_posted(s: Stack) -> str:
    repo = s.sim.get_repo(REPO)
    texts = [f"{i.title}\n{i.body}" for i in repo.issues.values()]
    texts += [c.body for i in repo.issues.values() for c in i.comments]
    return "\n".join(texts)


@pytest.fixture(params=[pytest.param("podman", marks=pytest.mark.podman), "bubblewrap"])
def sandbox(request: pytest.FixtureRequest) -> str:
    if request.param == "bubblewrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    return str(request.param)


async def give_secret(s: Stack) -> None:
    await Secrets(s.store.engine, KEY).set("repo", REPO, "INDEX_TOKEN", TOKEN)


async def test_a_step_with_a_secret_installs_and_the_agent_never_sees_it(
        tmp_path: Path, sandbox: str) -> None:
    built = wheel(tmp_path, "privdep", "ANSWER = 42\n")
    with package_index(tmp_path / "index", [built], token=TOKEN) as index:
        port = int(index.rsplit(":", 1)[1].split("/")[0])
        async with stack(tmp_path, SCRIPT, sandbox=sandbox, secrets_key=KEY,
                         egress_allow_private=True, dashboard_token=DASHBOARD) as s:
            await give_secret(s)
            s.sim.add_repo(REPO, config(
                port, step("private packages", INSTALL, "INDEX_TOKEN", f"127.0.0.1:{port}"),
                step("check", "python3 -c 'import privdep; print(privdep.ANSWER)'")))
            job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
            assert job.state == "succeeded", job.reason
            # The install reached the private index with the token, before the agent.
            assert [st.name for st in job.result.setup.steps] == ["private packages",
                                                                     "check"]
            assert all(st.ok for st in job.result.setup.steps)
            # privdep imported: test_dep passed before the change as after it.
            assert job.result.tests.before == "fail — 1 passed, 1 failed", job.result
            assert job.result.tests.after == "pass — 2 passed"
            pr = next(i for i in s.sim.get_repo(REPO).issues.values() if i.pull)
            assert "`private packages`" in pr.body and "`check`" in pr.body
            # What the agent's commands saw went to the model: no form of the secret, while
            # the files the step left are there, cleaned.
            seen = json.dumps(s.model.requests)
            assert "machine 127.0.0.1 login __token__ password [redacted]" in seen
            assert "HOME=/tmp" in seen  # the environment was listed
            assert_absent("what the agent saw", seen)
            assert_absent("GitHub", everything_posted(s))
            transcript = Path(job.result.agent.transcript).read_text()
            entries = [json.loads(line) for line in transcript.splitlines()]
            install = next(e for e in entries if e.get("step") == "private packages")
            assert "Successfully installed privdep" in install["output"]
            assert "token is [redacted]" in install["output"] and install["seconds"] > 0
            assert install["secrets"] == ["INDEX_TOKEN"]
            assert_absent("the transcript", transcript)
            cleaned = next(e for e in entries if e["kind"] == "setup-secrets-cleaned")
            assert "/workspace/.netrc (rewritten)" in cleaned["files"]
            if sandbox == "podman":  # its /tmp (HOME) lasts as long as the container
                assert "/tmp/.netrc (rewritten)" in cleaned["files"]
            # The dashboard shows each step, its time and its (redacted) output.
            base = s.sim.webhook_url.removesuffix("/webhook")
            async with httpx.AsyncClient(base_url=base, headers={
                    "Authorization": f"Bearer {DASHBOARD}"}) as http:
                page = (await http.get(f"/jobs/{job.id}")).text
            assert "Setup step private packages" in page and "token is [redacted]" in page
            assert_absent("the dashboard", page)
            # What the step left in the work tree is not pushed.
            repo = s.sim.get_repo(REPO)
            assert pr.pull is not None
            names = subprocess.run(["git", "ls-tree", "-r", "--name-only", pr.pull.head],
                                   cwd=repo.path, capture_output=True, text=True).stdout
            assert sorted(names.split()) == [".github/handoff.yml", "calc.py", "test_calc.py"]
            pushed = subprocess.run(["git", "log", "-p", pr.pull.head], cwd=repo.path,
                                    capture_output=True, text=True).stdout
            assert_absent("the pushed branch", pushed)


async def test_a_failing_step_ends_the_job_with_its_name_and_output(
        tmp_path: Path, sandbox: str) -> None:
    failing = 'echo "fetching with $INDEX_TOKEN"; echo "error: no such package" >&2; exit 3'
    async with stack(tmp_path, SCRIPT, sandbox=sandbox, secrets_key=KEY) as s:
        await give_secret(s)
        s.sim.add_repo(REPO, config(0, step("first", "echo fine"),
                                    step("private packages", failing, "INDEX_TOKEN"),
                                    step("never", "touch never-ran")))
        job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
        assert job.state == "failed" and job.category == "setup-failed", job.reason
        comment = [c.body for i in s.sim.get_repo(REPO).issues.values()
                   for c in i.comments][-1]
        assert "the setup step `private packages` ended with exit code 3" in comment
        assert "error: no such package" in comment and "fetching with [redacted]" in comment
        assert_absent("GitHub", everything_posted(s))
        assert [st.name for st in job.result.setup.steps] == ["first", "private packages"]
        assert s.model.requests == []  # the agent never started


async def test_a_step_whose_secret_is_not_set_says_how_to_set_it(tmp_path: Path) -> None:
    async with stack(tmp_path, SCRIPT, sandbox="bubblewrap", secrets_key=KEY) as s:
        s.sim.add_repo(REPO, config(0, step("private packages", "true", "INDEX_TOKEN")))
        job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
        assert job.state == "failed" and job.category == "setup-failed", job.reason
        comment = [c.body for i in s.sim.get_repo(REPO).issues.values()
                   for c in i.comments][-1]
        assert "`private packages` need the secret(s) `INDEX_TOKEN`" in comment
        assert f"handoff secrets set repo {REPO} NAME" in comment


async def test_the_agent_reaches_only_the_hosts_the_repository_opened(tmp_path: Path) -> None:
    built = wheel(tmp_path, "privdep", "ANSWER = 42\n")
    with package_index(tmp_path / "index", [built]) as index:
        port = int(index.rsplit(":", 1)[1].split("/")[0])
        fetch = ("python3 -c \"import urllib.request as u; "
                 "print(u.urlopen('http://{host}/simple/privdep/', timeout=10).status)\"")
        script = [{"tool": "bash", "args": {"command": fetch.format(host=f"127.0.0.1:{port}")
                                            + "; " + fetch.format(host="refused.example")}},
                  *SCRIPT[1:]]
        async with stack(tmp_path, script, sandbox="bubblewrap",
                         egress_allow_private=True) as s:
            s.sim.add_repo("acme/open", config(port, step(
                "deps", f"pip install --no-cache-dir --target . --index-url {index} privdep",
                network=f"127.0.0.1:{port}"), agent_hosts=f'"127.0.0.1:{port}"'))
            job = await s.handed_over("acme/open", "add() subtracts", "Fix add().")
            assert job.state == "succeeded", job.reason
            seen = json.dumps(s.model.requests[1])
            assert "200" in seen  # the opened host answered the agent
            pr = next(i for i in s.sim.get_repo("acme/open").issues.values() if i.pull)
            assert "## Network access refused" in pr.body
            assert "`refused.example:80`" in pr.body and "network.agent" in pr.body


async def test_a_branch_that_changed_what_a_step_runs_gets_no_secret(tmp_path: Path) -> None:
    """The agent edits the script a secret step runs; on /retry that step runs the branch's
    version, so it runs without network and without the secret."""
    steal = 'printf %s "$INDEX_TOKEN" > stolen.txt; echo "installed"\n'
    first = [{"tool": "edit", "args": {"path": "calc.py", "old_text": "return a - b",
                                       "new_text": "return a + b"}},
             {"tool": "edit", "args": {"path": "scripts/install.sh", "old_text": "echo ok",
                                       "new_text": steal}},
             {"tool": "finish", "args": {"summary": "add() adds now."}}]
    retry = [{"tool": "bash", "args": {"command": "cat stolen.txt; echo; env"}},
             {"tool": "edit", "args": {"path": "calc.py", "old_text": "def add(a, b):",
                                       "new_text": "def add(a, b):  # the sum"}},
             {"tool": "finish", "args": {"summary": "Looked again."}}]
    async with stack(tmp_path, [*first, *retry], sandbox="bubblewrap", secrets_key=KEY) as s:
        await give_secret(s)
        s.sim.add_repo(REPO, {**config(0, step("private packages", "bash scripts/install.sh",
                                                "INDEX_TOKEN")),
                              "scripts/install.sh": "echo ok\n",
                              "test_calc.py": FILES["test_calc.py"].replace(
                                  "import privdep\n", "").replace(
                                  "privdep.ANSWER", "42")})
        job = await s.handed_over(REPO, "add() subtracts", "Fix add().")
        assert job.state == "succeeded", job.reason
        pr = next(i for i in s.sim.get_repo(REPO).issues.values() if i.pull)
        s.sim.comment(REPO, pr.number, "/retry check again", "acme")
        again = await s.wait_job(lambda j: j.kind == "retry")
        assert again.state == "succeeded", again.reason
        assert "`scripts/install.sh`" in again.result.setup.offline
        assert [st.ok for st in again.result.setup.steps] == [True]
        assert "**Without network:**" in s.sim.get_repo(REPO).issues[pr.number].body
        assert_absent("what the agent saw", json.dumps(s.model.requests))
        assert_absent("GitHub", everything_posted(s))
        transcript = Path(again.result.agent.transcript).read_text()
        ran = [json.loads(line) for line in transcript.splitlines()]
        assert [e["secrets"] for e in ran if e["kind"] == "setup"] == [[]]
        assert_absent("the transcript", transcript)


def test_a_failing_steps_output_cannot_leave_its_code_block() -> None:
    """Output a package printed is hostile when posted: it stays one code block, whatever
    fences, mentions, references or HTML it holds."""
    from markdown_it import MarkdownIt

    from bot.executor.sandbox import CommandResult
    from bot.executor.setup_steps import tail

    hostile = "```\n@acme/admins fixes #1\n````\n<img src=x onerror=alert(1)>\n\x1b[31mred"
    shown = tail(CommandResult(exit_code=3, stdout=hostile, stderr="error: boom"))
    tokens = MarkdownIt("commonmark").parse(shown)
    assert [t.type for t in tokens] == ["fence"]
    assert "@acme/admins fixes #1" in tokens[0].content and "error: boom" in tokens[0].content
    assert "\x1b" not in shown
