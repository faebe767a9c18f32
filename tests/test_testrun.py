"""Test runs read test by test: parsers on real runner output, discovery, and the verdict."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bot.executor.sandbox import CommandResult
from bot.executor.testrun import (
    GO_TEST_ALL,
    PYTEST,
    TestReport,
    discover_from,
    instrumented,
    interpret,
    monorepo_command,
    needed_service,
    parse_junit,
    parse_output,
)
from bot.executor.verdict import compare, decide
from bot.reporter.pull_request import evidence_across
from bot.reporter.report import CUT_MARK, failure_comment, shorten
from bot.reporter.wording import RISK_NO_EVIDENCE, TITLE_NOT_RUN, TITLE_REGRESSED

OUT = Path(__file__).parent / "fixtures" / "runner-output"  # made by running each runner here


def text(name: str) -> str:
    return (OUT / name).read_text()


@pytest.mark.parametrize("name,runner,counts,failing", [
    ("pytest-9-q-mixed.txt", "pytest", (3, 2, 1, 1),
     ["test_mix.py::test_bad", "test_mix.py::TestThing::test_method_bad",
      "test_mix.py::test_error"]),
    ("pytest-7-q-mixed.txt", "pytest", (3, 2, 1, 1),
     ["test_mix.py::test_bad", "test_mix.py::TestThing::test_method_bad",
      "test_mix.py::test_error"]),
    ("pytest-7-q-pass.txt", "pytest", (3, 0, 0, 0), []),
    ("pytest-9-q-none.txt", "pytest", (0, 0, 0, 0), []),
    ("unittest-mixed.txt", "unittest", (2, 1, 1, 2), ["test_u.T.test_err", "test_u.T.test_bad"]),
    ("unittest-v-mixed.txt", "unittest", (2, 1, 1, 2),
     ["test_u.T.test_err", "test_u.T.test_bad"]),
    ("unittest-sandbox-mixed.txt", "unittest", (2, 1, 1, 2),
     ["test_u.T.test_err", "test_u.T.test_bad"]),
    ("unittest-pass.txt", "unittest", (2, 0, 0, 0), []),
    ("cargo-test-mixed.txt", "cargo test", (1, 1, 0, 1), ["tests::wrong"]),
    ("node-test-mixed.txt", "node --test", (2, 1, 0, 1), ["subtracts"]),
])
def test_summaries_of_real_runs(name: str, runner: str, counts: tuple[int, ...],
                                failing: list[str]) -> None:
    found = parse_output(text(name))
    assert found is not None
    got_runner, got_counts, got_failing = found
    assert got_runner == runner
    assert tuple(got_counts[k] for k in ("passed", "failed", "errors", "skipped")) == counts
    assert got_failing == failing


def test_go_test_output() -> None:
    out = ("--- FAIL: TestAdd (0.00s)\n    calc_test.go:9: add(2, 3) = -1, want 5\nFAIL\n"
           "FAIL\texample.com/calc\t0.002s\nok  \texample.com/calc/util\t(cached)\n")
    assert parse_output(out) == ("go test", {"passed": 0, "failed": 1, "errors": 0,
                                             "skipped": 0}, ["TestAdd"])


def test_go_test_json_counts_every_test_by_package() -> None:
    out = text("go-test-json-mixed.jsonl")
    report = interpret(GO_TEST_ALL, CommandResult(1, "", ""), out)
    assert report.runner == "go test" and report.complete
    assert report.counts == {"passed": 2, "failed": 1, "errors": 0, "skipped": 1}
    assert report.outcomes["example.com/mini/strutil.TestRev"] == "passed"
    assert report.outcomes["example.com/mini/calc.TestSub/small"] == "passed"
    assert report.failing == ["example.com/mini/calc.TestAdd"]
    assert report.line() == "fail — 2 passed, 1 failed, 1 skipped"
    green = "\n".join(ln for ln in out.splitlines() if "mini/calc" not in ln)
    assert interpret(GO_TEST_ALL, CommandResult(0, "", ""), green).line() == "pass — 1 passed"


def test_a_go_package_that_does_not_build_is_an_error_by_name() -> None:
    report = interpret(GO_TEST_ALL, CommandResult(2, "", "broken/b.go:3:23: cannot use"),
                       text("go-test-json-build-failed.jsonl"))
    assert report.counts["errors"] == 1 and "example.com/mini/broken" in report.failing
    assert "example.com/mini/calc.TestAdd" in report.failing and report.complete


def test_go_test_is_made_to_write_json_to_the_report_file() -> None:
    assert instrumented("go test ./...", "/tmp/r") == ("go test -json ./... > /tmp/r", {})
    assert instrumented(GO_TEST_ALL, "/tmp/r") == ("go test -json ./... > /tmp/r", {})
    assert instrumented("go test ./... && go vet ./...", "/tmp/r")[0] == \
        "go test ./... && go vet ./..."


def test_node_tap_names_every_test_and_its_suite() -> None:
    report = interpret("npm test", CommandResult(1, "", ""), text("node-18-tap-nested.tap"))
    assert report.runner == "node --test" and report.complete
    assert report.counts == {"passed": 5, "failed": 2, "errors": 0, "skipped": 1}  # "# tests 8"
    assert report.outcomes["suite > inner a"] == "passed"
    assert report.outcomes["suite > inner b"] == "skipped"
    assert report.failing == ["range excludes its end", "range steps"]


@pytest.mark.parametrize("knows_reporters", [True, False])
def test_node_is_asked_for_tap_only_where_it_knows_how(knows_reporters: bool,
                                                       tmp_path: Path) -> None:
    # A stand-in node that prints the NODE_OPTIONS it got, and refuses --test-reporter as
    # node before 18.15 does; the instrumented command runs in a real shell.
    (tmp_path / "node").write_text(
        "#!/bin/sh\ncase \"$1\" in --test-reporter*) " +
        ("exit 0" if knows_reporters else "echo 'node: bad option: $1' >&2; exit 9") +
        ";; esac\necho \"options: $NODE_OPTIONS\"\n")
    (tmp_path / "node").chmod(0o755)
    command, env = instrumented("node --test", "/tmp/r")
    assert env == {}
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert out.returncode == 0
    assert ("--test-reporter-destination=/tmp/r" in out.stdout) is knows_reporters


def test_mocha_and_jest_json_name_every_test() -> None:
    mocha = interpret("npm test -- --reporter json", CommandResult(2, "", ""),
                      text("mocha-10-json-mixed.json"))
    assert mocha.runner == "mocha" and mocha.complete
    assert mocha.counts == {"passed": 2, "failed": 1, "errors": 1, "skipped": 1}
    assert mocha.failing == ['calc subtracts', 'db "before all" hook for "connects"']
    assert mocha.outcomes["calc nested divides"] == "skipped"
    jest = interpret("npm test -- --json", CommandResult(1, "", ""),
                     text("jest-json-mixed.json"))
    assert jest.runner == "jest"
    assert jest.counts == {"passed": 2, "failed": 1, "errors": 1, "skipped": 1}
    assert jest.failing == ["/workspace/test/db.test.js", "calc subtracts"]
    assert instrumented("npm test -- --reporter json", "/tmp/r") == (
        "npm test -- --reporter json --reporter-option output=/tmp/r", {})
    assert instrumented("yarn test -- --json", "/tmp/r") == (
        "yarn test -- --json --outputFile=/tmp/r", {})


@pytest.mark.parametrize("script,command", [
    ("mocha", "npm test -- --reporter json"), ("mocha test/*.spec.js", "npm test -- --reporter "
                                               "json"),
    ("jest --coverage", "npm test -- --json"), ("node --test", "npm test"),
    ("mocha --reporter dot", "npm test"), ("eslint . && mocha", "npm test"),
])
def test_npm_test_asks_mocha_and_jest_for_json(script: str, command: str) -> None:
    files = {"package.json": json.dumps({"scripts": {"test": script}})}
    found = discover_from(set(files), files, {})
    assert found is not None and found.command == command


@pytest.mark.parametrize("command,result,state,line", [
    (PYTEST, CommandResult(5, "\nno tests ran in 0.01s\n", ""), "no-tests",
     "ran no test (no tests ran in 0.01s)"),
    (PYTEST, CommandResult(4, "ERROR: file or directory not found: tests\n\n"
                              "no tests ran in 0.00s\n", ""), "no-tests",
     "ran no test (ERROR: file or directory not found: tests)"),
    (PYTEST, CommandResult(4, "", "ERROR: usage: pytest [options]\npytest: error: "
                                  "unrecognized arguments: --cov\n"), "could-not-run",
     "could not run: exit code 4: pytest: error: unrecognized arguments: --cov"),
    (GO_TEST_ALL, CommandResult(1, "", "go: errors parsing go.mod:\n/workspace/go.mod:3: "
                                       "invalid go version '1.x'\n"), "could-not-run",
     "could not run: exit code 1: go: errors parsing go.mod:"),
    ("./run-checks.sh", CommandResult(1, "3 checks failed\n", ""), "ran", "fail — 3 checks "
     "failed"),
])
def test_a_run_with_no_test_is_no_test_run(command: str, result: CommandResult, state: str,
                                           line: str) -> None:
    report = interpret(command, result)
    assert (report.state, report.line()) == (state, line)
    if state != "ran":
        verdict = decide(report, report)
        assert verdict.title == TITLE_NOT_RUN and verdict.conclusion == "neutral"
        assert "test failure" in verdict.risks[0] or "ran no test" in verdict.risks[0]


def test_the_line_has_counts_not_progress_dots() -> None:
    report = interpret(PYTEST, CommandResult(0, text("pytest-7-q-pass.txt"), ""))
    assert report.line() == "pass — 3 passed"
    report = interpret("python3 -m unittest", CommandResult(1, "", text("unittest-mixed.txt")))
    assert report.line() == "fail — 2 passed, 1 failed, 1 error, 2 skipped"


def test_junit_gives_every_test() -> None:
    parsed = parse_junit(text("pytest-7-mixed-junit.xml"))
    assert parsed is not None
    counts, outcomes = parsed
    assert counts == {"passed": 3, "failed": 2, "errors": 1, "skipped": 1}
    assert outcomes["test_mix.TestThing.test_method_bad"] == "failed"
    assert outcomes["test_mix.test_error"] == "error"
    report = interpret(PYTEST, CommandResult(1, text("pytest-7-q-mixed.txt"), ""),
                       text("pytest-7-mixed-junit.xml"))
    assert report.complete and report.failing == [
        "test_mix.TestThing.test_method_bad", "test_mix.test_bad", "test_mix.test_error"]


def test_junit_with_a_dtd_is_refused() -> None:
    evil = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            '<testsuite><testcase classname="a" name="&e;"/></testsuite>')
    assert parse_junit(evil) is None


@pytest.mark.parametrize("command,result", [
    ("python -m pytest", CommandResult(127, "", "bash: line 1: python: command not found\n")),
    ("python3 -m pytest", CommandResult(1, "", "/usr/bin/python3: No module named pytest\n")),
    ("npm test", CommandResult(1, "", 'npm error Missing script: "test"\n')),
    ("make test", CommandResult(2, "", "make: *** No rule to make target 'test'.  Stop.\n")),
])
def test_a_missing_command_is_a_configuration_error(command: str,
                                                     result: CommandResult) -> None:
    report = interpret(command, result)
    assert report.state == "config-error" and not report.ran
    assert report.line().startswith("not run: configuration error")


def test_a_failing_test_that_mentions_a_missing_module_is_still_a_failure() -> None:
    out = "E   ModuleNotFoundError: No module named 'yaml'\n1 failed in 0.1s\n"
    assert interpret(PYTEST, CommandResult(1, out, "")).state == "ran"


@pytest.mark.parametrize("files,command,why", [
    ({"pyproject.toml": "[tool.pytest.ini_options]\n"}, PYTEST, "`pyproject.toml` configures"),
    ({"setup.cfg": "[tool:pytest]\n"}, PYTEST, "`setup.cfg`"),
    ({"tox.ini": "[tox]\nenvlist=py3\n[testenv]\ncommands = pytest\n"}, PYTEST, "tox"),
    ({"noxfile.py": "session.run('pytest')"}, PYTEST, "nox"),
    ({"tox.ini": "[tox]\n[testenv]\ncommands = stestr run {posargs}\n  -coverage report\n"},
     "stestr run && coverage report", "run directly (tox cannot run"),
    ({"tox.ini": "[testenv]\ncommands = coverage run -m pytest {posargs}\n"}, PYTEST,
     "the tox environments in `tox.ini` run pytest"),
    ({"tox.ini": "[testenv]\ncommands = pytest {posargs:tests}\n", "src": "",
      "pyproject.toml": "[project]\n"}, f"PYTHONPATH=src {PYTEST}", "`src/` is put on"),
    ({"setup.py": "", "tests": ""}, "python3 -m unittest discover -s tests -t .", "`tests/`"),
    ({"package.json": '{"scripts": {"test": "jest"}}'}, "npm test -- --json", "`jest`"),
    ({"package.json": '{"scripts": {"test": "vitest"}}', "pnpm-lock.yaml": ""}, "pnpm test",
     "test"),
    ({"go.mod": "module x\n"}, GO_TEST_ALL, "Go module"),
    ({"Cargo.toml": "[package]\n"}, "cargo test", "Cargo"),
    ({"Makefile": "all:\n\ttrue\ntest:\n\t./run-tests\n"}, "make test", "`test` target"),
])
def test_discovery(files: dict[str, str], command: str, why: str) -> None:
    found = discover_from(set(files), files, {})
    assert found is not None and found.command == command and why in found.reason


def test_discovery_finds_nothing_and_skips_npm_placeholder() -> None:
    assert discover_from({"README.md"}, {}, {}) is None
    npm = {"package.json": '{"scripts": {"test": "echo \\"Error: no test specified\\" && '
                           'exit 1"}}'}
    assert discover_from(set(npm), npm, {}) is None


def test_a_ci_that_runs_tox_gets_what_tox_would_run() -> None:
    files = {"tox.ini": "[tox]\nenvlist = py3\n[testenv]\ndeps = pytest\ncommands = pytest\n",
             "pyproject.toml": "[project]\nname = 'x'\n", "Makefile": "test:\n\ttox\n"}
    workflow = {".github/workflows/ci.yml": "jobs:\n  t:\n    steps:\n      - run: tox -e py\n"}
    found = discover_from(set(files), files, workflow)
    assert found is not None and found.command == PYTEST
    assert "the CI workflow `.github/workflows/ci.yml` runs `tox` too" in found.reason


def test_a_ci_line_that_installs_a_tool_does_not_run_it() -> None:
    files = {"Makefile": "test:\n\tpython3 -m pytest -q tests\n", "tests": ""}
    workflow = {".github/workflows/ci.yml": "steps:\n  - run: pip install pytest tox\n"
                                            "  - run: make test\n"}
    found = discover_from(set(files), files, workflow)
    assert found is not None and found.command == "make test"


def test_the_ci_workflow_breaks_a_tie() -> None:
    files = {"Makefile": "test:\n\tpytest\n", "pyproject.toml": "[tool.pytest.ini_options]\n"}
    workflow = {".github/workflows/ci.yml": "jobs:\n  t:\n    steps:\n      - run: make test\n"}
    found = discover_from(set(files), files, workflow)
    assert found is not None and found.command == "make test"
    assert "`.github/workflows/ci.yml` runs it too" in found.reason


# The words each client uses when the service is not there (each from a real run's output).
REFUSALS = [
    ('psycopg.OperationalError: connection failed: connection to server at "127.0.0.1", port '
     "5432 failed: Connection refused", "PostgreSQL on 127.0.0.1:5432"),
    ("E   redis.exceptions.ConnectionError: Error 111 connecting to localhost:6379. Connection "
     "refused.", "Redis on localhost:6379"),
    ("Error: connect ECONNREFUSED 127.0.0.1:27017", "MongoDB on 127.0.0.1:27017"),
    ("    db_test.go:14: dial tcp 127.0.0.1:3306: connect: connection refused",
     "MySQL on 127.0.0.1:3306"),
    ("pymysql.err.OperationalError: (2003, \"Can't connect to MySQL server on 'localhost' "
     "([Errno 111] Connection refused)\")", "MySQL on localhost:3306"),
]


@pytest.mark.parametrize(("output", "needs"), REFUSALS)
def test_a_refused_local_service_is_named(output: str, needs: str) -> None:
    assert needed_service(output).startswith(needs)
    # a remote host refusing is the network, not a service the sandbox lacks
    assert needed_service(output.replace("127.0.0.1", "10.1.2.3").replace(
        "localhost", "db.internal")) == ""


def test_a_suite_refused_by_its_database_could_not_run() -> None:
    output = ("EEE\nERROR tests/test_client.py::test_get - minikv.ConnectionError: Error 111 "
              "connecting to localhost:6379. Connection refused.\n3 errors in 0.1s\n")
    got = interpret(PYTEST, CommandResult(1, output, ""))
    assert got.state == "could-not-run" and got.needs.startswith("Redis on localhost:6379")
    assert got.line().startswith("could not run: needs Redis on localhost:6379")
    verdict = decide(got, got)
    assert verdict.conclusion == "neutral" and verdict.title == TITLE_NOT_RUN
    assert "the tests need Redis on localhost:6379, which the sandbox does not have" in \
        verdict.risks[0]
    # Some tests passing: the suite ran, and its failures are failures.
    mixed = interpret(PYTEST, CommandResult(1, output.replace("3 errors", "2 passed, 1 error"),
                                            ""))
    assert mixed.state == "ran"


def test_the_services_ci_starts_are_named_in_the_reason() -> None:
    files = {"pyproject.toml": "[tool.pytest.ini_options]\n"}
    workflow = {".github/workflows/ci.yml": "jobs:\n  test:\n    services:\n      postgres:\n"
                "        image: postgres:16\n      redis:\n        image: redis\n"
                "    steps:\n      - run: pytest\n"}
    found = discover_from(set(files), files, workflow)
    assert found is not None and found.services == ["postgres", "redis"]
    assert "start services the sandbox does not have (`postgres`, `redis`)" in found.reason
    assert discover_from(set(files), files, {"x.yml": "jobs: [unclosed"})  # not YAML: no hint


def test_a_monorepo_runs_every_package_in_one_pytest() -> None:
    found = monorepo_command({"libs/core": {"pyproject.toml", "src", "tests"},
                              "libs/text": {"setup.py", "tests"}})
    assert found.command == (f"PYTHONPATH=libs/core/src:libs/text {PYTEST} "
                             "--import-mode=importlib libs/core/tests libs/text/tests")
    assert "a monorepo of 2 Python packages (`libs/core`, `libs/text`)" in found.reason
    command, env = instrumented(found.command, "/tmp/r.xml")
    assert command.endswith("--junitxml=/tmp/r.xml") and env == {}  # every test by name


def report(failing: list[str], passing: list[str], ok: bool | None = None) -> TestReport:
    outcomes = {**{t: "passed" for t in passing}, **{t: "failed" for t in failing}}
    return TestReport(PYTEST, "ran", ok=not failing if ok is None else ok, runner="pytest",
                      counts={"passed": len(passing), "failed": len(failing), "errors": 0,
                              "skipped": 0}, failing=sorted(failing), complete=True,
                      outcomes=outcomes)


def test_one_failure_becoming_many_is_a_regression_naming_them() -> None:
    before = report(["t.a"], ["t.b", "t.c", "t.d"])
    after = report(["t.a", "t.b", "t.c"], ["t.d"])
    verdict = decide(before, after)
    assert verdict.conclusion == "failure" and verdict.title == TITLE_REGRESSED
    assert verdict.new_failures == ["t.b", "t.c"]  # the old pass/fail compare said success


def test_a_fixed_test_or_an_added_one_is_evidence() -> None:
    before = report(["t.a"], ["t.b"])
    assert decide(before, report([], ["t.a", "t.b"])).conclusion == "success"
    passing = report([], ["t.b"])
    assert compare(passing, report([], ["t.b", "t.new"])).added == ["t.new"]
    assert decide(passing, report([], ["t.b", "t.new"])).conclusion == "success"


def test_nothing_changed_is_neutral_with_the_risk_stated() -> None:
    before = report(["t.a"], ["t.b"])
    verdict = decide(before, report(["t.a"], ["t.b"]), last_failed_check="pytest -q")
    assert verdict.conclusion == "neutral" and RISK_NO_EVIDENCE in verdict.risks
    assert any("pytest -q" in r for r in verdict.risks)
    assert decide(before, report(["t.a"], ["t.b"]), evidence_expected=False).conclusion == \
        "success"
    assert decide(before, report(["t.a"], ["t.b"]), prior_evidence=True).conclusion == "success"


def test_counts_only_compare_by_counts() -> None:
    before = TestReport("go test ./...", "ran", ok=False, counts={"passed": 5, "failed": 1})
    after = TestReport("go test ./...", "ran", ok=False, counts={"passed": 3, "failed": 3})
    assert decide(before, after).conclusion == "failure"


def test_not_run_is_neutral() -> None:
    assert decide(None, None).title == TITLE_NOT_RUN
    missing = TestReport("python -m pytest", "config-error", detail="`python` could not start")
    verdict = decide(missing, None)
    assert verdict.conclusion == "neutral" and "not a test failure" in verdict.risks[0]


def test_tests_that_cannot_start_after_a_failed_setup_blame_the_setup() -> None:
    missing = interpret("npm test", CommandResult(127, "", "sh: 1: mocha: not found\n"))
    failure = "the dependencies could not be installed: `npm install` ended with exit code 1"
    verdict = decide(missing, missing, setup_failure=failure)
    assert verdict.title == TITLE_NOT_RUN
    assert "after the setup failed (the dependencies could not be installed" in verdict.risks[0]
    assert "a command the sandbox image has" not in verdict.risks[0]
    assert "a command the sandbox image has" in decide(missing, missing).risks[0]


def test_a_long_summary_is_cut_on_a_word_and_quoted_whole() -> None:
    summary = "word " * 200
    cut = shorten(summary, 500)
    assert cut.endswith(CUT_MARK) and cut[:-len(CUT_MARK)].endswith("word")
    from bot.jobs.store import Job

    job = Job(id=1, kind="implement", repo="o/r", installation_id=1, issue_number=1,
              pr_number=None, branch=None, state="failed", stage="", requested_by="a",
              trigger="label", feedback="", context={}, delivery_id=None, attempts=1,
              reason=f"the agent finished without changing any file: {cut}",
              category="no-changes", result={"summary": summary}, cancel_requested=False,
              cancel_by=None, reported=False, not_before=None, deferrals=0, lease_owner=None,
              lease_expires_at=None, created_at=0, updated_at=0, started_at=None,
              finished_at=None)
    body = failure_comment(job)
    assert "<details><summary>The agent's full summary</summary>" in body
    assert summary.strip() in body


def test_a_criterion_is_met_only_by_a_passing_test_that_shows_it() -> None:
    criteria = ["range(0, 3) gives [0, 1, 2]", "add(2, 3) returns 5", "x works"]
    summary = "1. range: `range excludes its end` passes.\n2. test_add passes\n3. x works now"
    got = evidence_across(criteria, [summary], ["range excludes its end", "t.test_add"])
    assert [c["met"] for c in got] == [True, True, False]
    assert got[0]["evidence"] == "shown by `range excludes its end` passing"
    assert got[2]["claim"] == "3. x works now"  # claimed by the agent, not shown
    assert not any(c["met"] for c in evidence_across(criteria, [summary], []))
