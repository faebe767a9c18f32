"""Logging set-up with a filter that keeps tokens and keys out of every log line."""

from __future__ import annotations

import logging
import re
from typing import Any

# The shapes of tokens and keys: redacted from every text, and a change that adds one is
# never pushed (bot/changes.py). One list, so the two can never disagree.
SECRET_PATTERNS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9_]{16,}|github_pat_[A-Za-z0-9_]{20,}|sk-[A-Za-z0-9_-]{16,}"
    r"|x-access-token:[^@\s]+|Bearer\s+[A-Za-z0-9._~+/=-]{16,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+"
    r"|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|xox[baprs]-[A-Za-z0-9-]{10,})"
)


# The values of configured secrets (model key, webhook secret, App key, agent_env values):
# redacted wherever they appear, whatever their shape. Longest first, so none is half-hidden.
_KNOWN: list[str] = []
MIN_SECRET = 8  # shorter values would redact ordinary words


def add_secrets(*values: str | None) -> None:
    """Remember secret values so that ``redact`` hides them from every text leaving Handoff."""
    for value in values:
        for part in [value or "", *(value or "").splitlines()]:
            part = part.strip()
            if len(part) >= MIN_SECRET and part not in _KNOWN and not part.startswith("-----"):
                _KNOWN.append(part)
    _KNOWN.sort(key=len, reverse=True)


def redact(text: str) -> str:
    """Replace configured secrets, and anything shaped like a token or key, with a marker."""
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return SECRET_PATTERNS.sub("[redacted]", text)


def redact_data(value: Any) -> Any:
    """``redact`` applied to every string inside JSON-like data (a request body)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted line, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
