"""The per-job transcript: every model call and tool call, as JSON Lines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bot.logs import redact


class Transcript:
    """Appends one JSON object a line; secrets are redacted before anything is written."""

    def __init__(self, path: Path | None, secrets: tuple[str, ...] = ()) -> None:
        self.path = path
        self.secrets = tuple(s for s in secrets if s)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, kind: str, **fields: Any) -> None:
        if self.path is None:
            return
        line = json.dumps({"at": time.time(), "kind": kind, **fields}, default=str)
        for secret in self.secrets:
            line = line.replace(secret, "[redacted]")
        with self.path.open("a") as fh:
            fh.write(redact(line) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]
