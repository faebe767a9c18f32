"""Add operations to ``github-openapi-subset.json`` from a full bundled description.

The full description is GitHub's ``api.github.com.json`` (github/rest-api-description), or
the same file as npm's ``@octokit/openapi`` republishes it (``npm pack @octokit/openapi@23.0.2``,
``package/generated/api.github.com.json``; its ``x-octokit`` keys are dropped here). Each
operation is copied as it is, with every component it references (transitively) that the
subset lacks, appended in the order first referenced; ``info.x-subset.operations`` and the
tags follow. Run: ``python -m devkit.simulator.subset FULL.json "GET /user" ...``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from devkit.simulator.openapi import SPEC_PATH


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "x-octokit"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def extend(subset: dict[str, Any], full: dict[str, Any], operations: list[str]) -> None:
    """Copy ``"METHOD /path"`` operations and the components they need into ``subset``."""
    pending: list[str] = []
    for name in operations:
        method, path = name.split(" ", 1)
        op = _strip(full["paths"][path][method.lower()])
        subset["paths"].setdefault(path, {})[method.lower()] = op
        pending += _refs(op)
        if name not in subset["info"]["x-subset"]["operations"]:
            subset["info"]["x-subset"]["operations"].append(name)
        for tag in op.get("tags", []):
            if tag not in {t["name"] for t in subset["tags"]}:
                subset["tags"].append(next(t for t in full["tags"] if t["name"] == tag))
    subset["paths"] = dict(sorted(subset["paths"].items()))
    subset["tags"].sort(key=lambda t: t["name"])
    while pending:
        _, _, kind, key = pending.pop(0).split("/", 3)
        if key in subset["components"].setdefault(kind, {}):
            continue
        node = _strip(full["components"][kind][key])
        subset["components"][kind][key] = node
        pending += _refs(node)


def main(argv: list[str]) -> None:
    full = json.loads(Path(argv[0]).read_text())
    subset = json.loads(SPEC_PATH.read_text())
    extend(subset, full, argv[1:])
    SPEC_PATH.write_text(json.dumps(subset, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
