"""GitHub's OpenAPI description (a subset): route matching, request and response validation."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema

SPEC_PATH = Path(__file__).parent / "github-openapi-subset.json"


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    op: dict[str, Any]

    @property
    def operation_id(self) -> str:
        return str(self.op.get("operationId", ""))


def _nullable_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` becomes JSON Schema's null type."""
    if isinstance(node, dict):
        node = {k: _nullable_to_jsonschema(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_to_jsonschema(v) for v in node]
    return node


class Spec:
    """The loaded description, with a validator per schema."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        self.raw = json.loads(path.read_text())
        self.components = _nullable_to_jsonschema(self.raw["components"])
        self.routes: list[tuple[re.Pattern[str], Operation]] = []
        for template, item in self.raw["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$")
            if "{path}" in template:  # contents paths may hold slashes
                pattern = re.compile("^" + re.sub(r"\{path\}", ".+",
                                     re.sub(r"\{(?!path)[^}]+\}", r"[^/]+", template)) + "$")
            for method, op in item.items():
                if method in {"get", "post", "patch", "put", "delete"}:
                    self.routes.append((pattern, Operation(method.upper(), template, op)))

    def find(self, method: str, path: str) -> Operation | None:
        for pattern, op in self.routes:
            if op.method == method and pattern.match(path):
                return op
        return None

    def _schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {**_nullable_to_jsonschema(schema), "components": self.components}

    def _errors(self, schema: dict[str, Any], value: Any) -> list[str]:
        validator = jsonschema.Draft7Validator(self._schema(schema))
        return [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
                for e in validator.iter_errors(value)][:10]

    def request_errors(self, op: Operation, body: Any) -> list[str]:
        """What is wrong with a request body, by the operation's schema."""
        content = op.op.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            return []
        if body is None:
            return ["(body): a JSON body is required"] if op.op["requestBody"].get(
                "required") else []
        return self._errors(content["schema"], body)

    def response_errors(self, op: Operation, status: int, body: Any) -> list[str]:
        """What is wrong with a response body, by the operation's schema for that status."""
        response = op.op.get("responses", {}).get(str(status))
        if response is None:
            return [f"status {status} is not documented for {op.operation_id}"]
        if "$ref" in response:
            response = self.resolve(response["$ref"])
        content = response.get("content", {}).get("application/json")
        if content is None or body is None:
            return []
        return self._errors(content["schema"], body)

    def resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.raw
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return dict(node)

    def example(self, name: str) -> Any:
        """A fresh copy of one of GitHub's example response bodies."""
        return copy.deepcopy(self.raw["components"]["examples"][name]["value"])

    @cached_property
    def operation_ids(self) -> set[str]:
        return {op.operation_id for _, op in self.routes}
