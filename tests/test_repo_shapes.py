"""Repositories in the shapes Handoff meets (tests/fixtures/repos), end to end without any
configuration: the simulator, the scripted model and Podman. For each shape: the command
discovery chose, counts that match a direct run of that command, a fixed test shown as now
passing and a broken one as newly failing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.executor.dependencies import NPM_FLAGS
from bot.executor.testrun import GO_TEST_ALL, PYTEST
from bot.jobs.store import Job
from bot.reporter.wording import TITLE_NOT_RUN
from devkit.stack import Stack, stack

SHAPES = Path(__file__).parent / "fixtures" / "repos"
IMAGE = os.environ.get("HANDOFF_SANDBOX_IMAGE", "handoff-sandbox:dev")
REPO = "acme/shape"
UNITTEST = "python3 -m unittest discover -s tests -t ."
MONOREPO = (f"PYTHONPATH=libs/core/src:libs/text {PYTEST} --import-mode=importlib "
            "libs/core/tests libs/text/tests")
NPM_WORKSPACES = "(cd packages/objects && npm test); (cd packages/strings && npm test)"
GO_WORKSPACE = f"(cd ansi && {GO_TEST_ALL}); (cd wrap && {GO_TEST_ALL})"
GO_MULTIMODULE = f"{GO_TEST_ALL}; (cd cli && {GO_TEST_ALL})"

pytestmark = pytest.mark.podman


@dataclass
class Shape:
    """One repository shape: what discovery must choose, its base counts, a fix and a break."""

    name: str
    command: str
    direct: str  # the same tests run by hand, read independently of Handoff's parsers
    base: tuple[int, int]  # (passed, failed) at the base commit
    fix: tuple[str, str, str]  # path, old text, new text
    fixed: list[str]
    breaks: tuple[str, str, str]
    broken: list[str]
    setup: str = ""  # the setup discovery must choose
    npm: bool = False  # its devDependencies come from the local npm registry


SHAPE_LIST = [
    Shape("go-modules", GO_TEST_ALL, "go test -v ./...", (3, 1),
          ("mathx/mathx.go", "\tif v > hi {\n\t\treturn lo", "\tif v > hi {\n\t\treturn hi"),
          ["example.com/shapes/mathx.TestClamp"],
          ("text/text.go", "return string(r)", "return s"),
          ["example.com/shapes/text.TestReverse"]),
    Shape("tox-src", f"PYTHONPATH=src {PYTEST}", f"PYTHONPATH=src {PYTEST}", (3, 1),
          ("src/slugkit/__init__.py", 'r"[a-z0-9]+", text)', 'r"[a-z0-9]+", text.lower())'),
          ["tests.test_slugify.test_upper_case_is_lowered"],
          ("src/slugkit/__init__.py", "return separator.join", 'return "-".join'),
          ["tests.test_slugify.test_separator"], "pip install --only-binary :all: 'pytest>=7'"),
    Shape("node-test", "npm test", "npm test", (2, 2),
          ("lib/range.js", "i <= end", "i < end"), ["range excludes its end", "range steps"],
          ("lib/range.js", "(a, b) => a + b, 0)", "(a, b) => a + b, 1)"),
          ["sum adds", "sum of nothing is zero"]),
    Shape("pytest-flat", PYTEST, PYTEST, (4, 1),
          ("durations.py", "if seconds > size", "if seconds >= size"),
          ["tests.test_durations.test_format_exact_hour"],
          ("durations.py", "for n, u in parts)", 'for n, u in parts if u != "h")'),
          ["tests.test_durations.test_parse_hours_and_minutes"]),
    Shape("make-driven", "make test", "make test", (2, 1),
          ("temperature.py", "9 / 5 + 23", "9 / 5 + 32"),
          ["tests.test_temperature.test_freezing"],
          ("temperature.py", "(fahrenheit - 32) * 5 / 9", "(fahrenheit - 30) * 5 / 9"),
          ["tests.test_temperature.test_boiling", "tests.test_temperature.test_body"]),
    Shape("unittest-setup", UNITTEST, UNITTEST, (3, 1),
          ("wordcount/__init__.py", 'r"[a-z\']+", text)', 'r"[a-z\']+", text.lower())'),
          ["tests.test_wordcount.WordsTest.test_lower_case"],
          ("wordcount/__init__.py", "most_common(n)", "most_common(n + 1)"),
          ["tests.test_wordcount.TopTest.test_n", "tests.test_wordcount.TopTest."
           "test_most_common_first"]),
    Shape("monorepo", MONOREPO, MONOREPO, (5, 1),
          ("libs/text/acme_text/__init__.py", "text.split())", 'text.split(" "))'),
          ["libs.text.tests.test_core.test_title_words_keeps_runs_of_spaces"],
          ("libs/core/src/acme_core/__init__.py", "max(low, min(value, high))",
           "max(low, value)"),
          ["libs.core.tests.test_core.test_clamp_above"]),
    # The same test name in two workspaces stays two tests, each named by its folder.
    Shape("npm-workspaces", NPM_WORKSPACES, "npm test --workspaces --if-present", (6, 1),
          ("packages/strings/src/index.js", "text.slice(0, max)", "text.slice(0, max - 1)"),
          ["packages/strings > truncate counts the ellipsis"],
          ("packages/objects/src/index.js",
           "if (Object.prototype.hasOwnProperty.call(obj, key)) out[key]", "out[key]"),
          ["packages/objects > handles empty input"]),
    Shape("go-workspace", GO_WORKSPACE,
          "for m in ansi wrap; do (cd $m && go test -v ./...); done", (5, 1),
          ("ansi/ansi.go", "return len(Strip(s))", "return len([]rune(Strip(s)))"),
          ["example.com/x/ansi.TestWidth"],
          ("wrap/wrap.go", '\t\tif line != "" {\n\t\t\tline += " "',
           '\t\tif line == "" {\n\t\t\tline += " "'),
          ["example.com/x/wrap.TestWords", "example.com/x/wrap.TestLongWord"]),
    # A fix in the root module shows in the nested module's tests (it replaces the root ../).
    Shape("go-multimodule", GO_MULTIMODULE, "go test -v ./...; (cd cli && go test -v ./...)",
          (4, 1),
          ("semver/semver.go", 'parts := strings.Split(strings.TrimPrefix(v, "v"), ".")',
           'core := strings.SplitN(strings.TrimPrefix(v, "v"), "-", 2)[0]\n'
           '\tparts := strings.Split(core, ".")'),
          ["example.com/tools/cli/cmd.TestLatestPrerelease"],
          ("semver/semver.go", "if d[0] < d[1] {", "if d[0] > d[1] {"),
          ["example.com/tools/semver.TestCompare", "example.com/tools/cli/cmd.TestLatest"]),
    Shape("node-mocha", "npm test -- --reporter json", "npm test", (7, 1),
          ("lib/bytes.js", "mag > map.kb", "mag >= map.kb"),
          ["format formats exactly one kilobyte"],
          ("lib/bytes.js", "(kb|mb|gb|b)$/i", "(kb|mb|gb|b)$/"), ["parse is case-insensitive"],
          f"npm install {NPM_FLAGS}", npm=True),
    Shape("node-jest", "npm test -- --json", "npm test", (6, 1),
          ("lib/duration.js", "abs > m)", "abs >= m)"), ["format formats exactly one minute"],
          ("lib/duration.js", "return n * d;", "return n * h;"), ["parse reads days"],
          f"npm ci {NPM_FLAGS}", npm=True),
]
NODE_MOCHA = next(s for s in SHAPE_LIST if s.name == "node-mocha")


def committed(shape: str, tmp: Path) -> Path:
    """The shape as a git repository with one commit (its CI workflow too, which the
    simulator's own push would refuse as the App's)."""
    work = tmp / "source"
    shutil.copytree(SHAPES / shape, work)
    for args in (["init", "-q", "--initial-branch=main"], ["add", "-A"],
                 ["-c", "user.name=acme", "-c", "user.email=acme@example.com", "commit", "-q",
                  "-m", "Initial commit"]):
        subprocess.run(["git", *args], cwd=work, check=True)
    return work


def direct_counts(shape: Shape, tmp: Path, npm: str = "") -> tuple[int, int]:
    """(passed, failed) from running the shape's command by hand in the sandbox image, read
    from the runner's own human-readable lines; an npm shape's devDependencies installed on
    the host first, from the registry at ``npm``."""
    work = tmp / "direct"
    shutil.copytree(SHAPES / shape.name, work)
    for path in [work, *work.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    if shape.npm:  # after the chmod, which would take the executable bit off mocha's bin
        subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
                        "--registry", npm, "--cache", str(tmp / "npm-cache")], cwd=work,
                       check=True, capture_output=True, timeout=300)
    run = subprocess.run(
        ["podman", "run", "--rm", "--network", "none", "-v", f"{work}:/workspace:Z",
         "-w", "/workspace", "-e", "HOME=/tmp", "-e", "PYTHONDONTWRITEBYTECODE=1", IMAGE,
         "sh", "-c", shape.direct], capture_output=True, text=True, timeout=300)
    out = run.stdout
    if "go test -v" in shape.direct:
        return len(re.findall(r"^\s*--- PASS", out, re.M)), \
            len(re.findall(r"^\s*--- FAIL", out, re.M))
    if shape.name == "node-mocha":
        return int(re.search(r"^  (\d+) passing", out, re.M).group(1)), \
            int(re.search(r"^  (\d+) failing", out, re.M).group(1))  # type: ignore[union-attr]
    if shape.name == "node-jest":
        summary = re.search(r"^Tests: +(\d+) failed, (\d+) passed", run.stderr, re.M)
        return int(summary.group(2)), int(summary.group(1))  # type: ignore[union-attr]
    if shape.direct.startswith("npm test"):  # a summary per workspace
        return sum(int(n) for n in re.findall(r"^# pass (\d+)", out, re.M)), \
            sum(int(n) for n in re.findall(r"^# fail (\d+)", out, re.M))
    if "unittest" in shape.direct:
        ran = int(re.search(r"^Ran (\d+) test", run.stderr, re.M).group(1))  # type: ignore
        failed = int(m.group(1)) if (m := re.search(r"failures=(\d+)", run.stderr)) else 0
        return ran - failed, failed
    summary = out.strip().splitlines()[-1]
    return tuple(int(m.group(1)) if (m := re.search(rf"(\d+) {w}", summary)) else 0
                 for w in ("passed", "failed"))  # type: ignore[return-value]


def npm_settings(shape: Shape, request: pytest.FixtureRequest) -> dict[str, Any]:
    """For a shape with npm devDependencies: Handoff pointed at the local registry, which
    the egress proxy may reach on 127.0.0.1."""
    if not shape.npm:
        return {}
    registry = request.getfixturevalue("local_npm")
    return {"npm_registry": registry.url, "egress_allow_private": True}


def edit(path: str, old: str, new: str, summary: str) -> list[dict[str, Any]]:
    return [{"tool": "edit", "args": {"path": path, "old_text": old, "new_text": new}},
            {"tool": "finish", "args": {"summary": summary}}]


async def handed_over(s: Stack, shape: Shape, tmp: Path, body: str = "The test shows it."
                      ) -> Job:
    s.sim.import_repo(REPO, committed(shape.name, tmp))
    number = s.sim.open_issue(REPO, "A bug", body, "acme").number
    s.sim.label_issue(REPO, number, "agent", "acme")
    job = await s.wait_job(lambda j: j.issue_number == number and j.kind == "implement")
    assert job.state == "succeeded", job.reason
    return job


def pr_and_check(s: Stack) -> tuple[str, Any]:
    repo = s.sim.get_repo(REPO)
    pr = next(i for i in repo.issues.values() if i.pull)
    [check] = repo.check_runs.values()
    return pr.body, check


@pytest.mark.parametrize("shape", SHAPE_LIST, ids=lambda s: s.name)
async def test_a_fix_shows_its_test_now_passing(shape: Shape, tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    script = edit(*shape.fix, "Fixed the bug the issue describes.")
    npm = npm_settings(shape, request)
    async with stack(tmp_path, script, **npm) as s:
        job = await handed_over(s, shape, tmp_path)
        assert job.result.tests.command == shape.command, job.result.tests.command_reason
        assert (job.result.setup.command, job.result.setup.warning) == (shape.setup, "")
        base = job.result.tests.base_report.counts
        assert (base["passed"], base["failed"]) == shape.base == \
            direct_counts(shape, tmp_path, npm.get("npm_registry", ""))
        body, check = pr_and_check(s)
        assert check.conclusion == "success", check.output
        assert f"Command: `{shape.command}`" in body
        passing = body.split("**Now passing** (failed before):")[1].splitlines()[0]
        assert all(f"`{name}`" in passing for name in shape.fixed), passing
        after = job.result.tests.after_report.counts
        assert (after["passed"], after["failed"]) == (sum(shape.base), 0)


@pytest.mark.parametrize("shape", SHAPE_LIST, ids=lambda s: s.name)
async def test_a_breaking_change_names_the_newly_failing_test(
        shape: Shape, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    script = edit(*shape.breaks, "Tidied the helper.")
    async with stack(tmp_path, script, **npm_settings(shape, request)) as s:
        job = await handed_over(s, shape, tmp_path)
        body, check = pr_and_check(s)
        assert check.conclusion == "failure", check.output
        newly = body.split("**Newly failing**")[1].split("\n\n")[0]
        assert all(f"`{name}`" in newly for name in shape.broken), newly
        assert sorted(job.result.verdict.new_failures) == sorted(shape.broken)


async def test_the_pr_carries_the_fix_and_its_test_not_the_agents_scratch(
        tmp_path: Path) -> None:
    shape = SHAPE_LIST[3]  # pytest-flat
    path, old, new = shape.fix
    scratch = {"reproduce_issue.py": "from durations import format_seconds\n"
               "print(format_seconds(3600))\n" * 20,
               "test_quick.py": "from durations import format_seconds\n\n\ndef test_q():\n"
               "    assert format_seconds(3600) == '1h'\n",
               "durations.py.bak": "old\n", "durations.py.orig": "old\n", "fix.patch": "-\n"}
    real_test = ("from durations import format_seconds\n\n\ndef test_exact_minute():\n"
                 "    assert format_seconds(60) == '1m'\n")
    script: list[dict[str, Any]] = [
        *[{"tool": "create", "args": {"path": p, "content": c}} for p, c in scratch.items()],
        {"tool": "edit", "args": {"path": path, "old_text": old, "new_text": new}},
        {"tool": "create", "args": {"path": "tests/test_units.py", "content": real_test}},
        {"tool": "finish", "args": {"summary": "format_seconds(3600) gives 1h now."}},
        # Shown the files it added, the agent drops its scratch but not the backups.
        {"tool": "bash", "args": {"command": "rm reproduce_issue.py test_quick.py fix.patch"}},
        {"tool": "finish", "args": {"summary": "format_seconds(3600) gives 1h now."}}]
    async with stack(tmp_path, script) as s:
        await handed_over(s, shape, tmp_path)
        note = next(str(r).replace("\\n", "\n") for r in s.model.requests
                    if "Not finished yet" in str(r))
        assert "Not finished yet: first check the files you added" in note
        assert "- reproduce_issue.py" in note and "- test_quick.py" in note
        repo = s.sim.get_repo(REPO)
        pr = next(i for i in repo.issues.values() if i.pull)
        pushed = subprocess.run(["git", "diff", "--name-only", "main", pr.pull.head],
                                cwd=repo.path, capture_output=True, text=True,
                                check=True).stdout.split()
        assert sorted(pushed) == ["durations.py", "tests/test_units.py"]
        review = next(c.body for c in pr.comments if "For reviewers" in c.body)
        assert "**Check first:** `durations.py`" in review
        assert "**Files changed** (1):\n- `durations.py`" in review
        assert "**Files added** (1):\n- `tests/test_units.py`" in review
        body, check = pr_and_check(s)
        assert check.conclusion == "success"
        assert "`tests.test_units.test_exact_minute`" in body  # added and passing


CRITERIA = "## Expected\n- [ ] format_seconds(3600) returns 1h\n- [ ] parse('90s') returns 90\n"


@pytest.mark.parametrize("fixes", [True, False], ids=["fixed", "readme-only"])
async def test_a_criterion_is_ticked_only_when_a_passing_test_shows_it(
        fixes: bool, tmp_path: Path) -> None:
    shape = SHAPE_LIST[3]  # pytest-flat
    change = shape.fix if fixes else ("README.md", "# durations", "# durations\n\nFixed.")
    script = edit(*change, "1. format_seconds(3600) returns 1h now: fixed.\n"
                  "2. parse('90s') returns 90: fixed.")
    async with stack(tmp_path, script) as s:
        await handed_over(s, shape, tmp_path, CRITERIA)
        body, check = pr_and_check(s)
    seconds = "- [x] format_seconds(3600) returns 1h — shown by " \
        "`tests.test_durations.test_format_exact_hour` passing"
    claimed = "— claimed by the agent, not shown: "
    assert "- [ ] parse('90s') returns 90 " + claimed + "2. parse('90s')" in body
    if fixes:
        assert seconds in body and check.conclusion == "success"
    else:
        assert "- [ ] format_seconds(3600) returns 1h " + claimed + "1. format_seconds" in body
        assert "[x]" not in body and check.conclusion == "neutral"


async def test_a_go_change_that_only_adds_a_test_shows_it_added_and_passing(
        tmp_path: Path) -> None:
    new_test = ('package text\n\nimport "testing"\n\nfunc TestReverseASCII(t *testing.T) {\n'
                '\tif Reverse("abc") != "cba" {\n\t\tt.Error("abc")\n\t}\n}\n')
    done = {"tool": "finish", "args": {"summary": "Added a test for ASCII input."}}
    script = [{"tool": "create", "args": {"path": "text/ascii_test.go", "content": new_test}},
              done, done]  # shown the file it added, the agent keeps it
    async with stack(tmp_path, script) as s:
        job = await handed_over(s, SHAPE_LIST[0], tmp_path)
        body, check = pr_and_check(s)
        assert job.result.verdict.added == ["example.com/shapes/text.TestReverseASCII"]
        assert "**Added and passing:** `example.com/shapes/text.TestReverseASCII`" in body
        assert "fail — 3 passed, 1 failed" in body and "fail — 4 passed, 1 failed" in body
        assert "no test was added" not in body and check.conclusion == "success"
        review = next(c.body for c in s.sim.get_repo(REPO).issues[2].comments
                      if "For reviewers" in c.body)
        assert "no test file was added" not in review
        assert "**Files added** (1):\n- `text/ascii_test.go`" in review


async def test_a_runner_that_stops_before_any_test_could_not_run_and_says_why(
        tmp_path: Path) -> None:
    # pytest-cov is in CI, not in the sandbox: pytest stops at its own arguments.
    source = committed(SHAPE_LIST[3].name, tmp_path)
    pyproject = source / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'addopts = "--cov=durations"\n')
    subprocess.run(["git", "-c", "user.name=acme", "-c", "user.email=acme@example.com",
                    "commit", "-qam", "Coverage in CI"], cwd=source, check=True)
    async with stack(tmp_path, edit(*SHAPE_LIST[3].fix, "Fixed format_seconds.")) as s:
        s.sim.import_repo(REPO, source)
        number = s.sim.open_issue(REPO, "A bug", "format_seconds(3600)", "acme").number
        s.sim.label_issue(REPO, number, "agent", "acme")
        job = await s.wait_job(lambda j: j.issue_number == number)
        assert job.state == "succeeded", job.reason
        body, check = pr_and_check(s)
    assert check.conclusion == "neutral" and check.output["title"] == TITLE_NOT_RUN
    why = "could not run: exit code 4: __main__.py: error: unrecognized arguments: " \
        "--cov=durations"
    assert why in body and "that is no test failure" in body, body
    tests = body.split("## Tests")[1].split("## Cost")[0]
    assert "fail —" not in tests and "Newly failing" not in tests


async def test_a_suite_that_needs_a_service_says_so_not_that_it_failed(tmp_path: Path) -> None:
    """Every test is refused by the Redis the CI starts beside them: the PR says the tests
    could not run for want of Redis (found in the workflow and in the refusals), not that the
    change failed them."""
    shape = Shape("needs-service", PYTEST, PYTEST, (0, 0), ("minikv/__init__.py", "", ""), [],
                  ("", "", ""), [])
    script = edit("README.md", "A tiny Redis client.", "A tiny Redis client (RESP 2).",
                  "Documented the protocol version.")
    async with stack(tmp_path, script) as s:
        job = await handed_over(s, shape, tmp_path)
        assert job.result.tests.command == PYTEST
        assert "`redis`" in job.result.tests.command_reason  # the workflow's service
        body, check = pr_and_check(s)
    assert check.conclusion == "neutral", check.output
    assert "could not run: needs Redis on localhost:6379" in body
    assert "the tests need Redis on localhost:6379, which the sandbox does not have" in body
    assert "Newly failing" not in body and "tests-regressed" not in body


async def test_a_test_command_in_parts_set_by_the_repository_runs_part_by_part(
        tmp_path: Path) -> None:
    """The override the README gives: `test_command` written in parts, here one workspace
    and the root's own check; each part reports its tests, named by its folder."""
    shape = next(s for s in SHAPE_LIST if s.name == "npm-workspaces")
    command = "(cd packages/strings && npm test); node --test packages/objects"
    source = committed(shape.name, tmp_path)
    (source / ".github" / "handoff.yml").write_text(f'test_command: "{command}"\n')
    subprocess.run(["git", "add", "-A"], cwd=source, check=True)
    subprocess.run(["git", "-c", "user.name=acme", "-c", "user.email=acme@example.com",
                    "commit", "-qm", "Handoff runs one workspace"], cwd=source, check=True)
    async with stack(tmp_path, edit(*shape.fix, "Fixed truncate.")) as s:
        s.sim.import_repo(REPO, source)
        number = s.sim.open_issue(REPO, "A bug", "truncate", "acme").number
        s.sim.label_issue(REPO, number, "agent", "acme")
        job = await s.wait_job(lambda j: j.issue_number == number)
        assert job.state == "succeeded", job.reason
        body, check = pr_and_check(s)
    assert job.result.tests.command == command
    assert job.result.tests.command_reason == "set as `test_command` in `.github/handoff.yml`"
    base = job.result.tests.base_report
    assert (base.counts["passed"], base.counts["failed"]) == (6, 1)
    assert "packages/strings > handles empty input" in base.outcomes
    assert "handles empty input" in base.outcomes  # the root's part: no folder to name
    assert check.conclusion == "success"
    assert "`packages/strings > truncate counts the ellipsis`" in \
        body.split("**Now passing** (failed before):")[1].splitlines()[0]
