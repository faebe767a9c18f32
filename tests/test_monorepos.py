"""Monorepos of npm workspaces and Go modules: discovery from git objects (the shapes in
tests/fixtures/repos, committed for real), the command in parts read back, and the parts'
reports summed with every test named by its folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.executor.dependencies import default_setup
from bot.executor.discovery import discover
from bot.executor.gitops import Checkout
from bot.executor.gomodules import external_requirements, go_work_uses
from bot.executor.monorepos import hands_over, workspace_folders, workspace_patterns
from bot.executor.sandbox import CommandResult
from bot.executor.testparts import Part, combine, joined, split
from bot.executor.testrun import GO_TEST_ALL, interpret
from bot.jobs.testreport import TestReport

SHAPES = Path(__file__).parent / "fixtures" / "repos"
NPM_WORKSPACES = "(cd packages/objects && npm test); (cd packages/strings && npm test)"
GO_WORKSPACE = "(cd ansi && go test -json ./...); (cd wrap && go test -json ./...)"
GO_MULTIMODULE = "go test -json ./...; (cd cli && go test -json ./...)"


def committed(tmp: Path, shape: str, change: dict[str, str | None] | None = None
              ) -> tuple[Checkout, str]:
    """A fixture shape committed to a git directory outside its work tree, as a job's
    checkout has it, and the commit; ``change`` edits files first (None deletes)."""
    co = Checkout(tmp / "git", tmp / "ws")
    shutil.copytree(SHAPES / shape, co.work_tree)
    for path, text in (change or {}).items():
        target = co.work_tree / path
        if text is None:
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    git = ["git", f"--git-dir={co.git_dir}", f"--work-tree={co.work_tree}"]
    subprocess.run(["git", "init", "-q", "--bare", str(co.git_dir)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "x"],
                   check=True)
    return co, subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()


async def discovered(tmp: Path, shape: str, change: dict[str, str | None] | None = None
                     ) -> tuple[str, str]:
    """(command, reason) discovery gives for a fixture shape."""
    found = await discover(*committed(tmp, shape, change), None)
    assert found is not None
    return found.command, found.reason


async def test_npm_workspaces_run_each_workspaces_test_script(tmp_path: Path) -> None:
    command, why = await discovered(tmp_path, "npm-workspaces")
    assert command == NPM_WORKSPACES
    assert "`package.json`'s workspaces (`packages/*`): the `test` script of each of 2 " \
        "workspaces, in its folder" in why
    assert "(the root's `test` script, `npm test --workspaces --if-present`, runs them all" in why
    assert "`packages/types` has no `test` script and is skipped" in why


async def test_npm_workspaces_without_a_root_script_and_with_mocha(tmp_path: Path) -> None:
    root = json.loads((SHAPES / "npm-workspaces" / "package.json").read_text())
    del root["scripts"]
    mocha = {"name": "@acme/types", "scripts": {"test": "mocha tests/"}}
    command, _ = await discovered(tmp_path, "npm-workspaces", {
        "package.json": json.dumps(root), "packages/types/package.json": json.dumps(mocha)})
    assert command == f"{NPM_WORKSPACES}; (cd packages/types && npm test -- --reporter json)"


async def test_a_root_script_of_its_own_is_kept(tmp_path: Path) -> None:
    root = json.loads((SHAPES / "npm-workspaces" / "package.json").read_text())
    root["scripts"]["test"] = "node --test packages"
    command, _ = await discovered(tmp_path, "npm-workspaces",
                                  {"package.json": json.dumps(root)})
    assert command == "npm test"


async def test_a_go_workspace_runs_each_module_it_uses(tmp_path: Path) -> None:
    command, why = await discovered(tmp_path, "go-workspace")
    assert command == GO_WORKSPACE
    assert why.startswith("a Go workspace (`go.work` uses `ansi`, `wrap`): `go test -json "
                          "./...` stops at a module's edge, so it runs in each")


async def test_several_go_modules_without_go_work_run_each_with_code(tmp_path: Path) -> None:
    command, why = await discovered(tmp_path, "go-multimodule")
    assert command == GO_MULTIMODULE  # doc/assets has a go.mod and no Go code
    assert why.startswith("2 Go modules with tests (`go.mod` in `.`, `cli`) and no `go.work`")
    # A module under testdata/ or vendor/ is no module of the repository's (./... skips them).
    command, _ = await discovered(tmp_path / "2", "go-multimodule", {
        "semver/testdata/mod/go.mod": "module x\n", "semver/testdata/mod/x.go": "package x\n"})
    assert command == GO_MULTIMODULE
    # A tools module (tool requirements, no tests) is neither run nor set up.
    tools = {"tools/go.mod": "module example.com/tools/tools\n\ngo 1.19\n\nrequire "
             "golang.org/x/vuln v1.0.0\n", "tools/tools.go": "//go:build tools\n\npackage tools\n"}
    co, rev = committed(tmp_path / "4", "go-multimodule", tools)
    assert (await discover(co, rev, None)).command == GO_MULTIMODULE  # type: ignore[union-attr]
    assert await default_setup(co, rev) is None
    # One module not at the root is found too.
    command, _ = await discovered(tmp_path / "3", "go-multimodule", {
        "go.mod": None, "semver": None})
    assert command == f"(cd cli && {GO_TEST_ALL})"


def test_workspace_globs_and_go_work_read_as_their_tools_read_them() -> None:
    tree = ["packages/a/package.json", "packages/b/c/package.json", "apps/web/package.json",
            "packages/a/node_modules/x/package.json", "package.json"]
    assert workspace_folders(["packages/*", "apps/web/"], tree) == ["apps/web", "packages/a"]
    assert workspace_folders(["packages/**", "!packages/a"], tree) == ["packages/b/c"]
    assert workspace_patterns('{"workspaces": {"packages": ["libs/*"]}}') == ["libs/*"]
    assert workspace_patterns("not json") == []
    assert go_work_uses("go 1.21\n\nuse ./tools\nuse (\n\t./a // the first\n\t\"./b\"\n\t.\n)\n"
                        ) == ["tools", "a", "b", "."]


def test_a_command_in_parts_reads_back_and_nothing_else_does() -> None:
    parts = [Part("", GO_TEST_ALL), Part("cli", GO_TEST_ALL)]
    assert split(joined(parts)) == parts
    assert split(NPM_WORKSPACES) == [Part("packages/objects", "npm test"),
                                     Part("packages/strings", "npm test")]
    for command in ("make lint; make test", "npm test", "(cd ../x && npm test); npm test",
                    "(cd a;b && npm test); npm test", "(cd $(x) && npm test)"):
        assert split(command) is None, command


def node_report(directory: str, passed: list[str], failed: list[str]) -> tuple[Part, TestReport]:
    outcomes = {**{t: "passed" for t in passed}, **{t: "failed" for t in failed}}
    return Part(directory, "npm test"), TestReport(
        "npm test", "ran", ok=not failed, exit_code=1 if failed else 0, runner="node --test",
        counts={"passed": len(passed), "failed": len(failed), "errors": 0, "skipped": 0},
        failing=failed, complete=True, outcomes=outcomes)


def test_the_parts_reports_are_summed_each_test_named_by_its_folder() -> None:
    got = combine(NPM_WORKSPACES, [node_report("packages/a", ["same"], ["bad"]),
                                   node_report("packages/b", ["same", "bad"], [])])
    assert got.counts == {"passed": 3, "failed": 1, "errors": 0, "skipped": 0}
    assert got.outcomes == {"packages/a > same": "passed", "packages/a > bad": "failed",
                            "packages/b > same": "passed", "packages/b > bad": "passed"}
    assert got.failing == ["packages/a > bad"] and not got.ok and got.complete
    assert got.line() == "fail — 3 passed, 1 failed"
    assert got.detail.startswith("packages/a: fail — 1 passed, 1 failed")


def test_a_part_that_could_not_run_is_an_error_by_its_folder() -> None:
    missing = interpret("npm test", CommandResult(127, "", "sh: 1: npm: command not found"))
    got = combine(NPM_WORKSPACES, [node_report("packages/a", ["same"], []),
                                   (Part("packages/b", "npm test"), missing)])
    assert got.state == "ran" and not got.ok
    assert got.outcomes == {"packages/a > same": "passed", "packages/b": "error"}
    assert got.line() == "fail — 1 passed, 1 error"
    # No part ran: the first part's reason stands for the run, naming its folder.
    alone = combine(NPM_WORKSPACES, [(Part("packages/b", "npm test"), missing)])
    assert alone.state == "config-error"
    assert alone.line().startswith("not run: configuration error: packages/b: `npm test` "
                                   "could not start")


def test_go_tests_keep_their_package_names() -> None:
    def events(module: str, action: str) -> str:
        return json.dumps({"Action": action, "Package": f"example.com/x/{module}",
                           "Test": "TestEmpty"})
    reports = [(Part(d, GO_TEST_ALL), interpret(GO_TEST_ALL, CommandResult(0, "", ""),
                                                events(d, action)))
               for d, action in (("ansi", "pass"), ("wrap", "fail"))]
    got = combine(GO_WORKSPACE, reports)
    assert got.outcomes == {"example.com/x/ansi.TestEmpty": "passed",
                            "example.com/x/wrap.TestEmpty": "failed"}


@pytest.mark.parametrize("command", [NPM_WORKSPACES, GO_MULTIMODULE])
def test_the_shown_command_is_one_a_shell_runs(command: str) -> None:
    assert subprocess.run(["sh", "-n", "-c", command]).returncode == 0


def test_one_npm_run_over_every_workspace_is_counted_from_all_its_summaries() -> None:
    """``npm test --workspaces`` run as one command (a `test_command` set so): node's TAP file
    holds only the last workspace's run, so the summaries on the output count instead."""
    out = SHAPES.parent / "runner-output"
    report = interpret("npm test --workspaces --if-present",
                       CommandResult(1, (out / "npm-workspaces-node-18.txt").read_text(), ""),
                       (out / "npm-workspaces-node-18-last.tap").read_text())
    assert report.counts == {"passed": 3, "failed": 1, "errors": 0, "skipped": 0}
    assert report.failing == ["fails in a"] and report.complete and not report.outcomes


@pytest.mark.parametrize("script,delegates", [
    ("npm test --workspaces --if-present", True), ("npm run test -ws", True),
    ("yarn workspaces foreach -A run test", True), ("yarn workspaces run test", True),
    ("lerna run test", True), ("npm test --workspaces && npm run e2e", False),
    ("node --test", False), ("npm run lint", False)])
def test_a_root_script_hands_over_only_when_it_runs_the_workspaces_alone(
        script: str, delegates: bool) -> None:
    assert hands_over(script) == delegates


async def test_go_modules_below_the_root_download_what_they_require_from_outside(
        tmp_path: Path) -> None:
    # The repository's own modules (required through go.work or a replace by a folder) need
    # no download: the shapes set up nothing.
    for shape in ("go-workspace", "go-multimodule"):
        assert await default_setup(*committed(tmp_path / shape, shape)) is None
    cli = (SHAPES / "go-multimodule" / "cli" / "go.mod").read_text()
    setup = await default_setup(*committed(tmp_path / "ext", "go-multimodule", {
        "cli/go.mod": cli.replace("require example.com/tools v0.0.0", "require (\n\t"
                                  "example.com/tools v0.0.0\n\tgolang.org/x/mod v0.14.0\n)"),
        "go.mod": "module example.com/tools\n\ngo 1.19\n\nrequire golang.org/x/text v0.3.0\n"}))
    assert setup is not None
    assert setup.command == "go mod download && (cd cli && go mod download)"
    assert setup.reason == "`go.mod` requires modules; the Go modules in `cli` require modules " \
        "from outside the repository"
    assert external_requirements("module a\nrequire (\n\tb v1 // indirect\n\tc v2\n)\n"
                                 "replace c => ../c\n", {"a"}) == ["b"]
