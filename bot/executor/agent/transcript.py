"""The per-job transcript: every model call and tool call, as JSON Lines."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from bot.logs import redact

log = logging.getLogger("handoff.executor")


class Transcript:
    """Appends one JSON object a line; secrets are redacted before anything is written.

    A line the disk refuses (full) is lost, not the job: the first loss is logged, and the
    next line written notes how many were lost."""

    def __init__(self, path: Path | None, secrets: tuple[str, ...] = ()) -> None:
        self.path = path
        self.secrets = tuple(s for s in secrets if s)
        self.lost = 0
        if path:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.error("transcript %s: cannot make its folder (%s)", path, exc)

    @classmethod
    def of_job(cls, data_dir: Path, job_id: int, secrets: tuple[str, ...] = ()) -> Transcript:
        """The transcript of job ``job_id`` (each step that writes to it opens it anew)."""
        return cls(data_dir / "transcripts" / f"job-{job_id}.jsonl", secrets)

    def write(self, kind: str, **fields: Any) -> None:
        if self.path is None:
            return
        line = self._line(kind, **fields)
        if self.lost:
            line = self._line("gap", lost=self.lost) + line
        try:
            with self.path.open("a") as fh:
                fh.write(line)
        except OSError as exc:
            self.lost += 1
            if self.lost == 1:
                log.error("transcript %s: could not write (%s); the job goes on, its lines "
                          "are lost until the disk takes them", self.path, exc)
            return
        self.lost = 0

    def _line(self, kind: str, **fields: Any) -> str:
        line = json.dumps({"at": time.time(), "kind": kind, **fields}, default=str)
        for secret in self.secrets:
            line = line.replace(secret, "[redacted]")
        return redact(line) + "\n"

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]
