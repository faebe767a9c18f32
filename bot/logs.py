"""Logging set-up: text or JSON lines, the job's context on every line, and a filter that
keeps tokens and keys out of every log line."""

from __future__ import annotations

import base64
import contextlib
import contextvars
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import orjson

# The shapes of tokens and keys: redacted from every text, and a change that adds one is
# never pushed (bot/executor/changes.py). One list, so the two can never disagree.
SECRET_PATTERNS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9_]{16,}|github_pat_[A-Za-z0-9_]{20,}|sk-[A-Za-z0-9_-]{16,}"
    r"|x-access-token:[^@\s]+|Bearer\s+[A-Za-z0-9._~+/=-]{16,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+"
    r"|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|xox[baprs]-[A-Za-z0-9-]{10,})"
)
# What a line is about; set with bind() (a job's task and what it starts) or extra={...}.
# A start-up line names what listens where (``listening``): listener, address and port.
FIELDS = ("delivery", "job", "repo", "stage", "listener", "address", "port")
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "handoff_log", default=MappingProxyType({}))


# The values of configured secrets (model key, webhook secret, App key, agent_env values):
# redacted wherever they appear, whatever their shape. Longest first, so none is half-hidden.
_KNOWN: list[str] = []
MIN_SECRET = 8  # shorter values would redact ordinary words


def add_secrets(*values: str | None, encoded: bool = False) -> None:
    """Remember secret values so that ``redact`` hides them from every text leaving Handoff;
    ``encoded``: their base64 and hex forms too (``forms``)."""
    for value in values:
        for part in [value or "", *(value or "").splitlines()]:
            part = part.strip()
            if len(part) < MIN_SECRET or part.startswith("-----"):
                continue
            for form in forms(part) if encoded else [part]:
                if len(form) >= MIN_SECRET and form not in _KNOWN:
                    _KNOWN.append(form)
    _KNOWN.sort(key=len, reverse=True)


def forms(value: str) -> list[str]:
    """``value`` as it may appear in text: itself, JSON-escaped, in hex (either case) and in
    base64 (standard and URL-safe). A value inside a longer encoded text starts at any of
    three byte offsets of a base64 group; for each, the characters that encode whole groups
    of the value alone are the same whatever surrounds it, and those are what is listed."""
    raw = value.encode()
    found = [value, json.dumps(value)[1:-1], raw.hex(), raw.hex().upper()]
    for shift in range(3):
        whole = raw[shift:][:(len(raw) - shift) // 3 * 3]
        found += [base64.b64encode(whole).decode(), base64.urlsafe_b64encode(whole).decode()]
    return list(dict.fromkeys(f for f in found if f))


def redact(text: str) -> str:
    """Replace configured secrets, and anything shaped like a token or key, with a marker."""
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return SECRET_PATTERNS.sub("[redacted]", text)


# C0 controls, DEL and C1 controls: terminal escapes among them.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, keep: str = "\t") -> str:
    """``text`` with control characters (C0, DEL, C1; but those in ``keep``) written as
    ``\\x1b``-style escapes, so agent-made text cannot drive the terminal or the log."""
    return CONTROL.sub(lambda m: m[0] if m[0] in keep else f"\\x{ord(m[0]):02x}", text)


def redact_data(value: Any) -> Any:
    """``redact`` applied to every string inside JSON-like data (a request body)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value


def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add fields (delivery, job, repo, stage) to every line logged from this task on,
    and from the tasks it starts; ``unbind`` with the token puts the old ones back."""
    return _context.set({**_context.get(), **fields})


def unbind(token: contextvars.Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """``bind`` for the lines logged inside a ``with`` block."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def enter_stage(stage: str) -> None:
    """A job's task moves to a stage: every line after says so, and this one is logged."""
    bind(stage=stage)
    logging.getLogger("handoff.executor").info("stage %s", stage)


def context() -> dict[str, Any]:
    return dict(_context.get())


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted line, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the bound fields, the traceback;
    redacted as a whole."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update(_context.get())
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return redact(orjson.dumps(line, default=str).decode())


class TextFormatter(RedactingFormatter):
    """The plain format, with the bound fields in brackets after the logger's name; the
    message on one line with its control characters escaped (agent-made names reach it)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        fields = {**_context.get(), **{n: getattr(record, n) for n in FIELDS
                                       if getattr(record, n, None) is not None}}
        record.ctx = "".join(f" {k}={fields[k]}" for k in FIELDS if k in fields)
        return super().format(record)


def listening(logger: logging.Logger, listener: str, url: str, detail: str = "") -> None:
    """The start-up line of a server: ``listener`` (webhook, metrics) is at ``url``, its
    address and port as fields, so a program reads them in either format (``listeners``)."""
    parts = urlsplit(url)
    logger.info("%s listening on %s%s", listener, url, detail, extra={
        "listener": listener, "address": parts.hostname, "port": parts.port})


# A text line: "<date> <time> <LEVEL> <logger> k=v k=v: message".
_TEXT_FIELDS = re.compile(r"^\S+ \S+ [A-Z]+ \S+?((?: \w+=\S*)*): ")


def fields_of(line: str) -> dict[str, str]:
    """The fields of one formatted line, JSON or text (values as text); {} for another."""
    line = line.strip()
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except ValueError:
            return {}
        return {k: str(data[k]) for k in FIELDS if isinstance(data, dict) and k in data}
    found = _TEXT_FIELDS.match(line)
    if found is None:
        return {}
    return dict(pair.split("=", 1) for pair in found[1].split())


def listeners(lines: Iterable[str]) -> dict[str, str]:
    """What the start-up lines among ``lines`` say listens where: ``{"webhook":
    "http://127.0.0.1:8000", "metrics": ...}`` (base URLs), in either log format."""
    found: dict[str, str] = {}
    for line in lines:
        fields = fields_of(line)
        if {"listener", "address", "port"} <= set(fields):
            host = fields["address"]
            host = f"[{host}]" if ":" in host else host
            found[fields["listener"]] = f"http://{host}:{fields['port']}"
    return found


class Throttle:
    """Lets one line through per ``seconds`` and counts what it held back, for events a
    stranger can cause at any rate (refused signatures)."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds, self.next_at, self.held = seconds, 0.0, 0

    def ready(self) -> int | None:
        """None to stay quiet; else how many were held back since the last line."""
        now = time.monotonic()
        if now < self.next_at:
            self.held += 1
            return None
        held, self.held, self.next_at = self.held, 0, now + self.seconds
        return held


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s%(ctx)s: "
                                           "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO: the GitHub and model calls, a line each.
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
