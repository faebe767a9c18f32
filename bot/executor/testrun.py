"""Test runs: which command, run how, and what came of it, test by test where the runner allows.

The test command comes from `.github/handoff.yml`, or is discovered from the repository's files
read from git objects of the base commit (never from the work tree, where the agent may have
planted symlinks). Runs happen in the sandbox; pytest writes JUnit XML to a fresh path in the
sandbox's /tmp, read back with ``cat`` and parsed here with the standard library (documents
with a DTD are refused, so no entity is ever expanded or followed). ``go test -json`` events,
node's TAP, and mocha's or jest's JSON reach a report file there the same way. Other runners
are read from their summary lines.
"""

from __future__ import annotations

import configparser
import json
import re
import secrets
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import yaml

from bot.executor import testparts
from bot.executor.gitops import Checkout
from bot.executor.sandbox import CommandResult, Sandbox
from bot.jobs.testreport import TestReport
from bot.reporter.markdown import code

JUNIT_CHUNK = 48 * 1024  # under the sandbox's output cap
JUNIT_MAX = 8 * 1024 * 1024
MAX_OUTCOMES = 20_000  # per-test results kept in a job's record
PYTEST = "python3 -m pytest -q -p no:cacheprovider"
GO_TEST_ALL = "go test -json ./..."
NPM_DEFAULT_TEST = 'echo "Error: no test specified" && exit 1'
GO_TEST = re.compile(r"^\s*go\s+test(\s|$)")
NODE_TEST = re.compile(r"^\s*((npm|pnpm|yarn)( run)? test|node\s+--test)(\s|$)")
SIMPLE_PYTEST = re.compile(r"^\s*(PYTHONPATH=[\w./:-]+\s+)?(python3?\s+-m\s+pytest|py\.test|pytest)"
                           r"(\s|$)")
SHELL_OPERATORS = re.compile(r"[;&|<>`$()\n]")


# -- discovery ---------------------------------------------------------------------------------

@dataclass
class TestCommand:
    """The command the tests run with, and why that one."""

    __test__ = False  # not a pytest test class

    command: str
    reason: str
    via: str = ""  # the tool a CI workflow runs that stands for this command (tox, nox)
    services: list[str] = field(default_factory=list)  # what CI starts beside the tests


MONOREPO_ROOTS = ("packages", "libs", "projects", "python")
PACKAGE_FILES = ("pyproject.toml", "setup.py", "setup.cfg")


async def _package_folders(co: Checkout, rev: str, names: set[str]
                           ) -> dict[str, set[str]]:
    """A monorepo's Python packages (``packages/*``, ``libs/*``...: a folder with a
    ``pyproject.toml``, ``setup.py`` or ``setup.cfg`` and a ``tests`` folder), each with the
    names at its top."""
    out: dict[str, set[str]] = {}
    for root in (r for r in MONOREPO_ROOTS if r in names):
        listing = await co.git("ls-tree", "-z", "--name-only", rev, "--", f"{root}/")
        for folder in sorted(p for p in listing.split("\0") if p)[:50]:
            inside = await co.git("ls-tree", "-z", "--name-only", rev, "--", f"{folder}/")
            top = {p.rsplit("/", 1)[-1] for p in inside.split("\0") if p}
            if top & set(PACKAGE_FILES) and "tests" in top:
                out[folder] = top
    return out


def monorepo_command(packages: dict[str, set[str]]) -> TestCommand:
    """One pytest run over every package's ``tests`` (each package's import root on the path,
    tests imported by path so two packages' ``tests/test_x.py`` do not collide): one run, one
    report, every test named with its package."""
    roots = [f"{p}/src" if "src" in top else p for p, top in packages.items()]
    tests = " ".join(f"{p}/tests" for p in packages)
    listed = ", ".join(code(p) for p in list(packages)[:5]) + \
        (f" and {len(packages) - 5} more" if len(packages) > 5 else "")
    return TestCommand(f"PYTHONPATH={':'.join(roots)} {PYTEST} --import-mode=importlib {tests}",
                       f"a monorepo of {len(packages)} Python packages ({listed}), each with a "
                       "`tests/` folder: pytest runs them all at once, each package importable "
                       "without an install")


INTERESTING = ("pyproject.toml", "setup.cfg", "tox.ini", "noxfile.py", "pytest.ini",
               "package.json", "Makefile", "makefile", "GNUmakefile", "requirements-dev.txt",
               "requirements.txt", "requirements-test.txt")


async def _workflow_hints(co: Checkout, rev: str, names: set[str]) -> dict[str, str]:
    """``run:`` text of the CI workflows, by file name (hints only; never executed as such)."""
    if ".github" not in names:
        return {}
    listing = await co.git("ls-tree", "-z", "--name-only", rev, "--", ".github/workflows/")
    out = {}
    for path in sorted(p for p in listing.split("\0") if p.endswith((".yml", ".yaml")))[:20]:
        text = await co.read_blob(rev, path)
        if text:
            out[path] = text[:100_000]
    return out


def discover_from(names: set[str], files: dict[str, str],
                  workflows: dict[str, str]) -> TestCommand | None:
    """The test command for a repository with these top-level ``names``, file texts and CI
    workflow texts; None when nothing says how its tests run."""
    candidates: list[TestCommand] = []
    pyproject, setup_cfg, tox = (files.get(n, "") for n in ("pyproject.toml", "setup.cfg",
                                                          "tox.ini"))
    python_files = [n for n in names if n.endswith(".py")] + \
        [n for n in ("tests", "test", "src") if n in names]
    reqs = " ".join(files.get(n, "") for n in files if n.startswith("requirements"))
    if "pytest.ini" in names:
        candidates.append(TestCommand(PYTEST, "`pytest.ini` configures pytest"))
    if "[tool.pytest" in pyproject:
        candidates.append(TestCommand(PYTEST, "`pyproject.toml` configures pytest "
                                      "(`[tool.pytest.ini_options]`)"))
    if "[tool:pytest]" in setup_cfg:
        candidates.append(TestCommand(PYTEST, "`setup.cfg` configures pytest (`[tool:pytest]`)"))
    if "[pytest]" in tox:
        candidates.append(TestCommand(PYTEST, "`tox.ini` configures pytest (`[pytest]`)"))
    if "conftest.py" in names:
        candidates.append(TestCommand(PYTEST, "the repository has a `conftest.py`"))
    tox_commands = _tox_commands(tox) if "tox.ini" in names else []
    if any(re.search(r"\bpy\.?test\b", c) for c in tox_commands):  # coverage run -m pytest too
        candidates.append(TestCommand(PYTEST, "the tox environments in `tox.ini` run pytest "
                                      "(run directly: tox cannot run in the sandbox)", "tox"))
    elif tox_commands:
        candidates.append(TestCommand(" && ".join(tox_commands), "the commands of tox's "
                                      "`[testenv]` in `tox.ini`, run directly (tox cannot run "
                                      "in the sandbox)", "tox"))
    if "noxfile.py" in names and "pytest" in files.get("noxfile.py", ""):
        candidates.append(TestCommand(PYTEST, "the nox sessions in `noxfile.py` run pytest "
                                      "(run directly: nox cannot run in the sandbox)", "nox"))
    if python_files and re.search(r"\bpytest\b", pyproject + setup_cfg + reqs):
        candidates.append(TestCommand(PYTEST, "pytest is among the Python project's "
                                      "dependencies"))
    if ("pyproject.toml" in names or "setup.py" in names or "setup.cfg" in names) and \
            ("tests" in names or "test" in names):
        start = "tests" if "tests" in names else "test"
        candidates.append(TestCommand(f"python3 -m unittest discover -s {start} -t .",
                                      f"a Python project with a `{start}/` folder and no "
                                      "pytest configuration"))
    named = sorted(n for n in names if re.fullmatch(r"test_\w*\.py|\w+_test\.py", n))
    if named:
        candidates.append(TestCommand(PYTEST, f"the repository has test modules named as "
                                      f"pytest finds them (`{named[0]}`)"))
    elif "tests" in names and not any(c.command.startswith("python3 -m unittest")
                                      for c in candidates):
        candidates.append(TestCommand(PYTEST, "the repository has a `tests/` folder (pytest "
                                      "runs unittest-style tests too)"))
    if "package.json" in names:
        script = _npm_test_script(files.get("package.json", ""))
        if script:
            tool = "pnpm" if "pnpm-lock.yaml" in names else \
                "yarn" if "yarn.lock" in names else "npm"
            args, how = _reporter_args(script)
            candidates.append(TestCommand(f"{tool} test{args}", f"`package.json` has a `test` "
                                          f"script ({code(script[:80])}){how}",
                                          f"{tool} test" if args else ""))
    if "go.mod" in names:
        candidates.append(TestCommand(GO_TEST_ALL, "the repository is a Go module "
                                      "(`go.mod`); `-json` reports every test"))
    if "Cargo.toml" in names:
        candidates.append(TestCommand("cargo test", "the repository is a Cargo package "
                                      "(`Cargo.toml`)"))
    for makefile in ("GNUmakefile", "makefile", "Makefile"):
        if re.search(r"^test\s*:", files.get(makefile, ""), re.MULTILINE):
            candidates.append(TestCommand("make test", f"`{makefile}` has a `test` target"))
            break
    if not candidates:
        return None
    # A command the CI workflows run wins; otherwise the first found, in the order above.
    chosen = candidates[0]
    for path, text in workflows.items():
        if found := next((c for c in candidates if _runs(text, c.via or c.command)), None):
            what = code(found.via) if found.via else "it"
            chosen = TestCommand(found.command, f"{found.reason}; the CI workflow {code(path)} "
                                 f"runs {what} too")
            break
    return _with_services(_with_src_path(chosen, names, files), workflows)


def workflow_services(workflows: dict[str, str]) -> list[str]:
    """The service containers the CI workflows start (``jobs.<job>.services``): databases and
    the like that the tests may need and a sandbox does not have."""
    found: list[str] = []
    for text in workflows.values():
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        jobs = data.get("jobs") if isinstance(data, dict) else None
        for job in (jobs or {}).values() if isinstance(jobs, dict) else ():
            services = job.get("services") if isinstance(job, dict) else None
            if isinstance(services, dict):
                found += [str(name) for name in services if str(name) not in found]
    return found[:10]


def _with_services(chosen: TestCommand, workflows: dict[str, str]) -> TestCommand:
    if not (services := workflow_services(workflows)):
        return chosen
    return TestCommand(chosen.command, f"{chosen.reason}; the CI workflows start services the "
                       f"sandbox does not have ({', '.join(code(s) for s in services)}): tests "
                       "that need them cannot pass here", chosen.via, services)


def _tox_commands(tox: str) -> list[str]:
    """The commands of tox's ``[testenv]``, as a shell runs them here: ``{posargs}`` becomes
    its default, ``{toxinidir}`` the work tree, a leading ``-`` (tox ignores that exit code)
    is dropped, and a line with another substitution is left out."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(tox)
    except configparser.Error:
        return []
    text = parser.get("testenv", "commands", fallback="")
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"\{posargs:?([^}]*)\}", r"\1", line.strip().lstrip("-").strip())
        line = re.sub(r"\{toxinidir\}/?", "./", line).strip()
        if line and not re.search(r"[{}]", line):
            out.append(line)
    return out


def _with_src_path(chosen: TestCommand, names: set[str], files: dict[str, str]
                   ) -> TestCommand:
    """pytest over a ``src/`` layout sees the package there without an install."""
    config = "".join(files.get(n, "") for n in ("pyproject.toml", "setup.cfg", "tox.ini",
                                                 "pytest.ini"))
    if chosen.command != PYTEST or "src" not in names or "pythonpath" in config:
        return chosen
    return TestCommand(f"PYTHONPATH=src {PYTEST}", f"{chosen.reason}; `src/` is put on the "
                       "import path, so its package imports without an install", chosen.via)


def _runs(workflow: str, command: str) -> bool:
    words = {"python3 -m pytest -q -p no:cacheprovider": r"\bpytest\b",
             GO_TEST_ALL: r"\bgo test\b", "cargo test": r"\bcargo test\b",
             "make test": r"\bmake test\b", "npm test": r"\bnpm (run )?test\b",
             "pnpm test": r"\bpnpm (run )?test\b", "yarn test": r"\byarn (run )?test\b",
             "tox": r"\btox\b", "nox": r"\bnox\b"}
    pattern = words.get(command, re.escape(command))
    return any(re.search(pattern, line) for line in workflow.splitlines()
               if ("run:" in line or line.startswith((" ", "\t"))) and not INSTALLS.search(line))


# A workflow line that installs a tool (`pip install pytest tox`) does not run it.
INSTALLS = re.compile(r"\b(pip3?|pipx|uv( pip)?|apt(-get)?|npm|pnpm|yarn|conda|poetry|go) "
                      r"(install|add|get)\b")


def _reporter_args(script: str) -> tuple[str, str]:
    """Arguments that make a ``test`` script that is one mocha or jest run report every test
    as JSON, and the words that say so; ("", "") for any other script."""
    if SHELL_OPERATORS.search(script) or re.search(r"--(reporter|json)\b", script):
        return "", ""
    if re.fullmatch(r"mocha(\s.*)?", script):
        return " -- --reporter json", "; mocha's JSON reporter names every test"
    if re.fullmatch(r"jest(\s.*)?", script):
        return " -- --json", "; jest's JSON output names every test"
    return "", ""


def _npm_test_script(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    scripts = data.get("scripts") if isinstance(data, dict) else None
    script = scripts.get("test") if isinstance(scripts, dict) else None
    if not isinstance(script, str) or not script.strip() or script.strip() == NPM_DEFAULT_TEST:
        return ""
    return script.strip()


# -- a run and its report ----------------------------------------------------------------------

def not_run() -> TestReport:
    return TestReport("", "not-run")


def instrumented(command: str, path: str) -> tuple[str, dict[str, str]]:
    """The command made to write a machine-readable report to ``path``: ``go test``'s JSON
    events for a plain ``go test`` command; mocha's and jest's JSON where the command asks
    for JSON; TAP where node's test runner may run (``npm test`` and the like); JUnit XML
    where pytest runs (an argument for a
    plain pytest command, else ``PYTEST_ADDOPTS`` for commands that may start pytest)."""
    if GO_TEST.match(command) and not SHELL_OPERATORS.search(command):
        if not re.search(r"\s-json(\s|$)", command):
            command = GO_TEST.sub(lambda m: "go test -json" + m.group(1), command, count=1)
        return f"{command} > {shlex.quote(path)}", {}
    if SIMPLE_PYTEST.match(command) and not SHELL_OPERATORS.search(command):
        return f"{command} --junitxml={shlex.quote(path)}", {}
    if NODE_TEST.match(command) and not SHELL_OPERATORS.search(command):
        if re.search(r"\s--reporter json\b", command) and "output=" not in command:
            return f"{command} --reporter-option output={shlex.quote(path)}", {}
        if re.search(r"\s--json\b", command) and "--outputFile" not in command:
            return f"{command} --outputFile={shlex.quote(path)}", {}
    if NODE_TEST.match(command):  # node's runner reports to the file too, where node knows how
        options = shlex.quote(f"--test-reporter=tap --test-reporter=tap --test-reporter-"
                              f"destination={path} --test-reporter-destination=stdout")
        return (f"if node --test-reporter=tap -e 0 >/dev/null 2>&1; then export NODE_OPTIONS="
                f"{options}; fi; {command}"), {}
    if re.search(r"\b(pytest|tox|nox|make|python3?)\b", command):
        return command, {"PYTEST_ADDOPTS": f"--junitxml={path}"}
    return command, {}


async def run_tests(sandbox: Sandbox, command: str, phase: str) -> TestReport:
    """Run the test command in the sandbox and read what came of it (a command in parts,
    one per folder, part by part: ``testparts``)."""
    if not (parts := testparts.split(command)):
        return await _run_one(sandbox, command, phase)
    reports: list[tuple[testparts.Part, TestReport]] = []
    for part in parts:  # after a part that timed out, or a limit, the run is over
        reports.append((part, await _run_one(sandbox, part.command, phase, part.directory)))
        if reports[-1][1].state == "timed-out" or sandbox.limit_hit:
            break
    return testparts.combine(command, reports)


async def _run_one(sandbox: Sandbox, command: str, phase: str, directory: str = ""
                   ) -> TestReport:
    path = f"/tmp/handoff-report-{phase}-{secrets.token_hex(8)}"
    argv, env = instrumented(command, path)
    if directory:
        argv = f"cd {shlex.quote(directory)} && {{ {argv}\n}}"
    result = await sandbox.exec(argv, env=env or None)
    machine = await _read_sandbox_file(sandbox, path) if (argv != command or env) else None
    return interpret(command, result, machine)


async def _read_sandbox_file(sandbox: Sandbox, path: str) -> str | None:
    """A file of the sandbox's /tmp read back in pieces under the output cap, or None."""
    chunks: list[str] = []
    offset = 0
    quoted = shlex.quote(path)
    while offset < JUNIT_MAX:
        got = await sandbox.exec(f"test -f {quoted} && tail -c +{offset + 1} {quoted} | "
                                 f"head -c {JUNIT_CHUNK}", timeout=60)
        if not got.ok or got.truncated:
            return None
        chunks.append(got.stdout)
        size = len(got.stdout.encode())
        offset += size
        if size < JUNIT_CHUNK:
            return "".join(chunks) or None
    return None


NOT_FOUND = re.compile(r"(command not found|Missing script: \"?test|No rule to make target "
                       r"'?test|executable file not found)")


def _runner_missing(command: str, output: str) -> str:
    """The words that say the command or its runner is not there, or ""."""
    if m := NOT_FOUND.search(output):
        return m.group(0)
    module = re.match(r"\s*python3?\s+-m\s+([\w.]+)", command)
    if module and (m := re.search(rf"No module named '?{re.escape(module.group(1))}'?$", output,
                                  re.MULTILINE)):
        return m.group(0)
    return ""


def interpret(command: str, result: CommandResult, machine: str | None = None) -> TestReport:
    """A report from a finished run: the runner's machine-readable report when there is one
    (JUnit XML, ``go test -json`` events), else the summary lines of its output."""
    structured = parse_report(machine) if machine else None
    if structured and _one_run_of_several(structured, result.stdout):
        structured = None  # the file holds the last run only: the summaries count them all
    output = result.stdout + "\n" + result.stderr + ("\n" + structured[2] if structured else "")
    tail = last_line(output)
    if result.timed_out:
        return TestReport(command, "timed-out", exit_code=result.exit_code,
                          detail=result.describe())
    missing = _runner_missing(command, output)
    if result.exit_code in (126, 127) or (missing and not result.ok and
                                          not _summary_seen(output)):
        cause = missing or result.describe()
        return TestReport(command, "config-error", exit_code=result.exit_code,
                          detail=f"{code(command)} could not start ({cause[:200]})")
    report = TestReport(command, "ran", ok=result.ok, exit_code=result.exit_code, detail=tail)
    if structured is not None:
        report.runner, report.counts, report.outcomes = structured[3], structured[0], \
            structured[1]
        report.failing = sorted(t for t, o in report.outcomes.items() if o in ("failed", "error"))
        report.complete = True
    else:
        found = parse_output(output)
        if found is not None:
            report.runner, report.counts, report.failing = found
            bad = report.bad() or 0
            report.complete = len(report.failing) == bad
    total = sum(report.counts.values()) if report.counts else None
    if total == 0 or (report.runner == "pytest" and result.exit_code in (4, 5)):
        report.state = "no-tests"
        report.detail = _first_error(output) or tail
    elif not report.counts and not result.ok and KNOWN_RUNNER.match(command):
        report.state = "could-not-run"
        report.detail = f"{result.describe()}: {_first_error(output) or tail}"[:300]
    if not result.ok and not report.counts.get("passed") and (service := needed_service(output)):
        report.state, report.needs = "could-not-run", service.split(" (", 1)[0]
        report.detail = service
    return report


# Refused connections to a service on this machine, as the common clients word them.
REFUSED = re.compile(
    r"(?:connection to server at \"?(?P<pg_host>[\w.-]+)\"?(?: \([\d.:a-f]+\))?, port "
    r"(?P<pg_port>\d+) failed: Connection refused"
    r"|Error 111 connecting to (?P<r_host>[\w.-]+):(?P<r_port>\d+)"
    r"|ECONNREFUSED (?P<n_host>[\d.:a-f]+):(?P<n_port>\d+)"
    r"|dial tcp (?P<g_host>[\w.:\[\]-]+):(?P<g_port>\d+): connect: connection refused"
    r"|Can't connect to MySQL server on '(?P<m_host>[\w.-]+)'(?::(?P<m_port>\d+))?"
    r"|accepting TCP/IP connections on port (?P<pg2_port>\d+))")
SERVICES = {5432: "PostgreSQL", 3306: "MySQL", 6379: "Redis", 27017: "MongoDB",
            9200: "Elasticsearch", 5672: "RabbitMQ", 11211: "memcached", 9092: "Kafka"}
LOCAL = ("localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0")


def needed_service(output: str) -> str:
    """Why the tests could not run when a service they connect to on this machine refused
    them (a database the CI starts beside them, which a sandbox does not have), or ""."""
    for match in REFUSED.finditer(output):
        groups = {k: v for k, v in match.groupdict().items() if v}
        host = next((v for k, v in groups.items() if k.endswith("host")), "localhost")
        port = int(next((v for k, v in groups.items() if k.endswith("port")),
                        "3306" if "m_host" in groups else "0"))
        if host not in LOCAL:
            continue
        name = SERVICES.get(port, "a service")
        return f"{name} on {host}:{port} ({match.group(0)[:120]})"
    return ""


# Runners whose every run reports its tests: no count from one that failed means no test ran.
KNOWN_RUNNER = re.compile(r"^\s*(PYTHONPATH=\S+\s+)?(python3?\s+-m\s+(pytest|unittest)|py\.test|"
                          r"pytest|go\s+test|cargo\s+test|node\s+--test)(\s|$)")
ERROR_LINE = re.compile(r"^(?:ERROR|E  |error|Error|fatal|go: |npm ERR!|FAIL\s.*\[(?:build|setup) "
                        r"failed\]|\S+\.go:\d+:\d+: |\S.*?: error: ).*$", re.MULTILINE)


def _first_error(output: str) -> str:
    """The first line of the output that reads as the cause of a stop (past a usage line),
    or ""."""
    found = [m.group(0).strip() for m in ERROR_LINE.finditer(output)]
    cause = next((line for line in found if "usage:" not in line), found[0] if found else "")
    return cause[:200]


def _one_run_of_several(structured: tuple[dict[str, int], dict[str, str], str, str],
                        stdout: str) -> bool:
    """Whether node's TAP file holds one of several runs (``npm test --workspaces``: each
    workspace's run writes the same file anew), seen from the summaries on its output."""
    if structured[3] != "node --test":
        return False
    shown = sum(int(n) for k, n in NODE_COUNT.findall(stdout) if k == "tests")
    return shown > sum(structured[0].values())


def _summary_seen(output: str) -> bool:
    return parse_output(output) is not None


def last_line(output: str) -> str:
    lines = [ln.strip().strip("=").strip() for ln in output.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln and not re.fullmatch(r"[.FEsxX]+\s*(\[\s*\d+%\])?", ln)]
    return lines[-1][:200] if lines else ""


# -- parsers -----------------------------------------------------------------------------------

def parse_report(text: str) -> tuple[dict[str, int], dict[str, str], str, str] | None:
    """Counts, per-test outcomes, the human-readable output and the runner from a
    machine-readable report (JUnit XML, ``go test -json`` events, or node's TAP); None when it
    is none of them."""
    if text.lstrip().startswith("<"):
        parsed = parse_junit(text)
        return (*parsed, "", "pytest") if parsed else None
    if text.lstrip().startswith("{") and (js := parse_js_json(text)):
        return js
    if re.search(r'^\{"(Time|Action)"', text, re.MULTILINE):
        go = parse_go_json(text)
        return (*go, "go test") if go else None
    tap = parse_tap(text)
    return (*tap, "node --test") if tap else None


RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def parse_junit(text: str) -> tuple[dict[str, int], dict[str, str]] | None:
    """Counts and per-test outcomes from JUnit XML; None if it is not that (or has a DTD)."""
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        return None
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    outcomes: dict[str, str] = {}
    for case in root.iter("testcase"):
        name = case.get("name") or "?"
        cls = case.get("classname") or ""
        test_id = f"{cls}.{name}" if cls else name
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kind = {"failure": "failed"}.get(child.tag, child.tag)
                outcome = max(outcome, kind, key=RANK.__getitem__)
        if test_id in outcomes:
            outcome = max(outcome, outcomes[test_id], key=RANK.__getitem__)
        outcomes[test_id] = outcome
    return _counted(outcomes)


GO_BUILD_FAILED = re.compile(r"^FAIL\s+(\S+)\s+\[(?:build|setup) failed\]")
GO_ACTIONS = {"pass": "passed", "fail": "failed", "skip": "skipped"}


def parse_go_json(text: str) -> tuple[dict[str, int], dict[str, str], str] | None:
    """Counts, outcomes (``package.TestName``, subtests as ``TestName/sub``) and the output
    text from ``go test -json`` events; None if there are none. A package that failed with no
    failing test (it did not build, or its test binary died) counts as one error."""
    outcomes: dict[str, str] = {}
    failed_packages: list[str] = []
    packages_with_failures: set[str] = set()
    lines: list[str] = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # go 1.19-1.23 print a package that did not build as text
            lines.append(line)
            if m := GO_BUILD_FAILED.match(line):
                failed_packages.append(m.group(1))
            continue
        if not isinstance(event, dict) or not isinstance(event.get("Action"), str):
            continue
        action, package, test = event["Action"], str(event.get("Package", "")), \
            event.get("Test")
        if action == "output":
            lines.append(str(event.get("Output", "")).rstrip("\n"))
        elif action in GO_ACTIONS and test:
            outcomes[f"{package}.{test}"] = GO_ACTIONS[action]
            if action == "fail":
                packages_with_failures.add(package)
        elif action == "fail":
            failed_packages.append(package)
    if not outcomes and not failed_packages and not lines:
        return None
    for package in failed_packages:
        if package not in packages_with_failures:
            outcomes[package] = "error"
    counts, kept = _counted(outcomes)
    return counts, kept, "\n".join(lines)


def parse_js_json(text: str) -> tuple[dict[str, int], dict[str, str], str, str] | None:
    """Counts and outcomes from mocha's JSON reporter (a failed hook is an error by name) or
    jest's ``--json`` (a test file that could not run is an error by its path)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    outcomes: dict[str, str] = {}
    if isinstance(data.get("stats"), dict) and isinstance(data.get("tests"), list):
        failed = {str(t.get("fullTitle")) for t in data.get("failures") or []
                  if isinstance(t, dict)}
        pending = {str(t.get("fullTitle")) for t in data.get("pending") or []
                   if isinstance(t, dict)}
        for test in data["tests"]:
            if isinstance(test, dict):
                name = str(test.get("fullTitle"))
                outcomes[name] = "failed" if name in failed else \
                    "skipped" if name in pending else "passed"
        outcomes.update({name: "error" for name in failed if name not in outcomes})
        return (*_counted(outcomes), "", "mocha")
    if isinstance(data.get("testResults"), list) and "numTotalTests" in data:
        jest = {"passed": "passed", "failed": "failed"}
        for suite in data["testResults"]:
            if not isinstance(suite, dict):
                continue
            results = [r for r in suite.get("assertionResults") or [] if isinstance(r, dict)]
            for r in results:
                outcomes[str(r.get("fullName") or r.get("title"))] = \
                    jest.get(str(r.get("status")), "skipped")
            if not results and suite.get("status") == "failed":
                outcomes[str(suite.get("name", "?"))] = "error"
        return (*_counted(outcomes), "", "jest")
    return None


TAP_SUBTEST = re.compile(r"^(\s*)# Subtest: (.*)$")
TAP_RESULT = re.compile(r"^(\s*)(not )?ok \d+(?: - (.*?))?(?:\s+#\s*(SKIP|TODO)\b.*)?\s*$",
                        re.IGNORECASE)


def parse_tap(text: str) -> tuple[dict[str, int], dict[str, str], str] | None:
    """Counts and outcomes from TAP as node's test runner writes it (a subtest named after
    its parents, ``suite > test``); None when there is no test line."""
    outcomes: dict[str, str] = {}
    open_subtests: list[tuple[int, str]] = []
    for line in text.splitlines():
        if m := TAP_SUBTEST.match(line):
            indent = len(m.group(1))
            open_subtests = [s for s in open_subtests if s[0] < indent] + [(indent, m.group(2))]
            continue
        if not (m := TAP_RESULT.match(line)):
            continue
        indent, name = len(m.group(1)), (m.group(3) or "?").replace("\\#", "#")
        parents = [n for i, n in open_subtests if i < indent]
        open_subtests = [s for s in open_subtests if s[0] < indent]
        outcome = "skipped" if m.group(4) else "failed" if m.group(2) else "passed"
        outcomes[" > ".join([*parents, name])] = outcome
    if not outcomes:
        return None
    counts, kept = _counted(outcomes)
    return counts, kept, ""


def _counted(outcomes: dict[str, str]) -> tuple[dict[str, int], dict[str, str]]:
    """Counts of these outcomes, and the outcomes kept (only the others past MAX_OUTCOMES)."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for outcome in outcomes.values():
        counts["errors" if outcome == "error" else outcome] += 1
    if len(outcomes) > MAX_OUTCOMES:
        outcomes = {t: o for t, o in outcomes.items() if o != "passed"}
    return counts, outcomes


PYTEST_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ (?:passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?)"
    r"(?:, )?)+|no tests ran)\s+in\s+[\d.]+s", re.MULTILINE)
PYTEST_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s", re.MULTILINE)
UNITTEST_END = re.compile(r"^(OK|FAILED|NO TESTS RAN)(?: \(([^)]*)\))?\s*$", re.MULTILINE)
UNITTEST_FAILED = re.compile(r"^(?:FAIL|ERROR): (\S+)(?: \(([^)]+)\))?", re.MULTILINE)
GO_FAIL = re.compile(r"^\s*--- FAIL: (\S+)", re.MULTILINE)
GO_PASS = re.compile(r"^\s*--- PASS: (\S+)", re.MULTILINE)
GO_SKIP = re.compile(r"^\s*--- SKIP: (\S+)", re.MULTILINE)
GO_PACKAGE = re.compile(r"^(ok|FAIL)\s+\S+\s+(?:[\d.]+s|\(cached\))", re.MULTILINE)
CARGO_RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored",
                          re.MULTILINE)
CARGO_FAILED = re.compile(r"^---- (\S+) stdout ----", re.MULTILINE)
NODE_COUNT = re.compile(r"^(?:#|ℹ) (tests|pass|fail|skipped|todo|cancelled) (\d+)\s*$",
                        re.MULTILINE)
NODE_FAILED = re.compile(r"^\s*not ok \d+ - (.+?)\s*(?:#.*)?$", re.MULTILINE)
JEST_TESTS = re.compile(r"^Tests:\s+(.*\d+ total)\s*$", re.MULTILINE)
JEST_FAILED = re.compile(r"^\s*● (.+?)\s*$", re.MULTILINE)
MOCHA = re.compile(r"^\s+(\d+) (passing|failing|pending)\b", re.MULTILINE)


def parse_output(output: str) -> tuple[str, dict[str, int], list[str]] | None:
    """(runner, counts, failing test names) from a runner's own summary, or None."""
    if m := _last(PYTEST_SUMMARY, output):
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        for number, word in re.findall(r"(\d+) (\w+)", m.group(1)):
            key = {"error": "errors", "xfailed": "skipped"}.get(word, word)
            if key in ("passed", "failed", "errors", "skipped"):
                counts[key] += int(number)
            elif key == "xpassed":
                counts["passed"] += int(number)
        return "pytest", counts, _unique(PYTEST_FAILED.findall(output))
    if (ran := _last(UNITTEST_RAN, output)) and (end := _last(UNITTEST_END, output)):
        total = int(ran.group(1))
        extra = dict((k.strip(), int(v)) for k, v in re.findall(r"([a-z ]+)=(\d+)",
                                                                 end.group(2) or ""))
        failed, errors = extra.get("failures", 0), extra.get("errors", 0)
        skipped = extra.get("skipped", 0) + extra.get("expected failures", 0)
        counts = {"passed": total - failed - errors - skipped, "failed": failed,
                  "errors": errors, "skipped": skipped}
        names = []
        for name, where in UNITTEST_FAILED.findall(output):
            names.append(where if where.endswith(name) else
                         (f"{where}.{name}" if where else name))
        return "unittest", counts, _unique(names)
    cargo = CARGO_RESULT.findall(output)
    if cargo:
        passed, failed, ignored = (sum(int(r[i]) for r in cargo) for i in range(3))
        return "cargo test", {"passed": passed, "failed": failed, "errors": 0,
                              "skipped": ignored}, _unique(CARGO_FAILED.findall(output))
    if GO_PACKAGE.search(output) or GO_FAIL.search(output):
        failing = _unique(GO_FAIL.findall(output))
        counts = {"passed": len(set(GO_PASS.findall(output))), "failed": len(failing),
                  "errors": 0, "skipped": len(set(GO_SKIP.findall(output)))}
        return "go test", counts, failing
    node: dict[str, int] = {}
    for key, value in NODE_COUNT.findall(output):  # a summary per run (npm workspaces)
        node[key] = node.get(key, 0) + int(value)
    if "tests" in node and "pass" in node:
        counts = {"passed": node["pass"], "failed": node.get("fail", 0) +
                  node.get("cancelled", 0), "errors": 0,
                  "skipped": node.get("skipped", 0) + node.get("todo", 0)}
        return "node --test", counts, _unique(NODE_FAILED.findall(output))
    if m := _last(JEST_TESTS, output):
        found = dict((w, int(n)) for n, w in re.findall(r"(\d+) (\w+)", m.group(1)))
        counts = {"passed": found.get("passed", 0), "failed": found.get("failed", 0),
                  "errors": 0, "skipped": found.get("skipped", 0) + found.get("todo", 0)}
        return "jest", counts, _unique(JEST_FAILED.findall(output))
    mocha = {w: int(n) for n, w in MOCHA.findall(output)}
    if "passing" in mocha or "failing" in mocha:
        return "mocha", {"passed": mocha.get("passing", 0), "failed": mocha.get("failing", 0),
                         "errors": 0, "skipped": mocha.get("pending", 0)}, []
    return None


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - the last one is wanted
        pass
    return found


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
