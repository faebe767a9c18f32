"""``python -m devkit.simulator.subset FULL.json "METHOD /path" ...`` adds operations to the
simulator's OpenAPI subset from GitHub's full description: each operation as it is, with
every component it needs, however deep, and its tags; ``x-octokit`` keys dropped. The full
description here is the subset itself, with ``x-octokit`` keys added as npm's copy has them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from devkit.simulator import subset
from devkit.simulator.openapi import SPEC_PATH, Spec

GITHUB = json.loads(SPEC_PATH.read_text())
OPERATIONS: list[str] = GITHUB["info"]["x-subset"]["operations"]


def full_description() -> dict[str, Any]:
    """GitHub's description as npm's ``@octokit/openapi`` has it: ``x-octokit`` keys here
    and there."""
    full = copy.deepcopy(GITHUB)
    for path in full["paths"].values():
        for op in path.values():
            op["x-octokit"] = {"changes": [{"type": "OPERATION", "date": "2024-01-01"}]}
    for schema in full["components"]["schemas"].values():
        schema["x-octokit"] = {"renamed": False}
    return full


def empty_subset() -> dict[str, Any]:
    return {**copy.deepcopy(GITHUB), "paths": {}, "components": {}, "tags": [],
            "info": {**GITHUB["info"], "x-subset": {"operations": []}}}


def references(node: Any) -> set[str]:
    """Every ``$ref`` in ``node``, read with json alone."""
    text = json.dumps(node)
    return {part.split('"', 1)[0] for part in text.split('"$ref": "')[1:]}


def test_every_operation_comes_back_with_all_it_needs_and_no_octokit_keys(
        tmp_path: Path) -> None:
    rebuilt = empty_subset()
    subset.extend(rebuilt, full_description(), OPERATIONS)
    assert rebuilt["paths"] == GITHUB["paths"]
    assert list(rebuilt["paths"]) == sorted(GITHUB["paths"])
    assert rebuilt["info"]["x-subset"]["operations"] == OPERATIONS
    assert [t["name"] for t in rebuilt["tags"]] == [t["name"] for t in GITHUB["tags"]]
    assert "x-octokit" not in json.dumps(rebuilt)
    needed = references(rebuilt)
    for ref in needed:  # every reference resolves inside the subset, as GitHub's does
        _, _, kind, key = ref.split("/", 3)
        assert rebuilt["components"][kind][key] == GITHUB["components"][kind][key], ref
    copied = {f"#/components/{kind}/{key}" for kind, items in rebuilt["components"].items()
              for key in items}
    assert copied == needed  # nothing that no operation needs
    (tmp_path / "subset.json").write_text(json.dumps(rebuilt))
    found = Spec(tmp_path / "subset.json").find("GET", "/repos/octo/widgets/issues/1")
    assert found is not None and found.operation_id == "issues/get"  # the simulator reads it


def test_adding_an_operation_twice_changes_nothing() -> None:
    once = empty_subset()
    subset.extend(once, full_description(), OPERATIONS[:3])
    twice = copy.deepcopy(once)
    subset.extend(twice, full_description(), OPERATIONS[:3])
    assert twice == once


def test_the_command_rewrites_the_subset_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "github-openapi-subset.json"
    target.write_text(json.dumps(empty_subset()))
    (tmp_path / "full.json").write_text(json.dumps(full_description()))
    monkeypatch.setattr(subset, "SPEC_PATH", target)
    subset.main([str(tmp_path / "full.json"), "GET /app", "GET /repos/{owner}/{repo}"])
    written = json.loads(target.read_text())
    assert written["info"]["x-subset"]["operations"] == ["GET /app",
                                                         "GET /repos/{owner}/{repo}"]
    assert set(written["paths"]) == {"/app", "/repos/{owner}/{repo}"}
    assert target.read_text().endswith("}\n")
