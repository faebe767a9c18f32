"""The shape of the house: the layers of DESIGN.md (a module imports only from its own layer
or below), no import circles, and the development kit (the GitHub simulator, the scripted
model, the dev stack) stays out of the product's modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("bot", "handlers", "devkit")


# The layers, lowest first: a module imports only from its own layer or one below it. The
# executor sits above the reporter (the runner hands each GitHub write to it, and no step
# writes to GitHub itself); the reporter never imports the executor.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("bot", "bot.config", "bot.logs", "bot.metrics", "bot.prices", "bot.server", "bot.backup",
     "bot.loopwatch"),
    ("bot.github",),
    ("handlers",),
    ("bot.jobs",),
    ("bot.reporter",),
    ("bot.executor",),
    ("bot.receiver",),
    ("bot.dashboard",),
    ("bot.cli", "bot.wiring", "bot.doctor", "bot.metrics_port", "bot.workerprocess", "devkit"),
)
# What only the reporter may call on GitHub: every write of the API.
GITHUB_WRITES = {"create_comment", "update_comment", "create_pull", "update_pull",
                 "create_check_run", "update_check_run", "react_issue", "react_comment",
                 "reply_review_comment", "create_ref"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Modules imported at run time (imports inside functions count; type-only do not)."""
    out: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            out.update(a.name for a in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else str(node.module))

    Visitor().visit(ast.parse(path.read_text()))
    return {name for name in out if name in known}


def layer(name: str) -> int:
    """The index of the layer ``name`` belongs to (its longest listed prefix)."""
    found = [(len(prefix), index) for index, prefixes in enumerate(LAYERS)
             for prefix in prefixes if name == prefix or name.startswith(prefix + ".")
             and prefix != "bot"]
    assert found, f"{name} is in no layer of LAYERS: place it"
    return max(found)[1]


def test_no_import_runs_up_a_layer() -> None:
    known = modules()
    upward = sorted(f"{name} -> {other}" for name, path in known.items()
                    for other in imports(path, known) if layer(other) > layer(name))
    assert upward == []


def test_the_layers_are_as_the_design_names_them() -> None:
    """Spot checks of the rule, so the table cannot drift into allowing them."""
    assert layer("bot.reporter.pull_request") < layer("bot.executor.runner")
    assert layer("handlers.vocabulary") < layer("bot.jobs.record") < layer("bot.receiver.web")
    assert layer("bot.github.naming") < layer("handlers.router")
    assert layer("bot.metrics") < layer("bot.github.client")
    assert layer("bot.cli") == layer("bot.wiring") == len(LAYERS) - 1


def test_only_the_reporter_writes_to_github() -> None:
    """Handlers decide, the executor acts, the reporter speaks: no module outside
    bot/reporter calls a GitHub write (the executor's one write is its git push)."""
    known = modules()
    writers = {}
    for name, path in known.items():
        if name.startswith(("bot.reporter", "bot.github", "devkit")):
            continue
        calls = {n.func.attr for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        if calls & GITHUB_WRITES:
            writers[name] = sorted(calls & GITHUB_WRITES)
    assert writers == {}


def test_no_import_circles() -> None:
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        trail.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                circles.append(trail[trail.index(other):] + [other])
            elif not state.get(other):
                visit(other)
        trail.pop()
        state[name] = 2

    for name in sorted(graph):
        if not state.get(name):
            visit(name)
    assert circles == [], "\n".join(" -> ".join(c) for c in circles)


def test_the_product_never_imports_the_development_kit() -> None:
    known = modules()
    leaks = {name: sorted(i for i in imports(path, known) if i.startswith("devkit"))
             for name, path in known.items()
             if not name.startswith("devkit")}
    assert {k: v for k, v in leaks.items() if v} == {}


def test_the_job_runner_only_sequences() -> None:
    """The runner hands each step what it needs and GitHub writes to the reporter; it stays
    small enough to read in one sitting."""
    tree = ast.parse((ROOT / "bot/executor/runner.py").read_text())
    [runner] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "JobRunner"]
    assert runner.end_lineno is not None
    assert runner.end_lineno - runner.lineno + 1 < 150
    calls = {n.func.attr for n in ast.walk(runner) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute)}
    assert not calls & {"create_comment", "create_pull", "update_pull", "create_check_run",
                        "react_issue", "react_comment", "reply_review_comment"}
