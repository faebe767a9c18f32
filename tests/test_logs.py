"""Secrets stay out of log lines, tracebacks included; start-up lines are read back from
either format."""

from __future__ import annotations

import io
import logging

import pytest

from bot import logs
from bot.logs import RedactingFormatter, redact

TOKEN = "ghs_" + "A1b2C3d4" * 5


def test_tokens_and_keys_are_redacted() -> None:
    text = (f"push with x-access-token:{TOKEN}@host, key sk-live-0123456789abcdefgh, "
            "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxIn0.sig")
    clean = redact(text)
    assert TOKEN not in clean and "sk-live" not in clean and "eyJhbGci" not in clean
    assert clean.count("[redacted]") >= 3


def test_tracebacks_are_redacted() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise RuntimeError(f"git failed for {TOKEN}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "boom %s", (TOKEN,),
                                   sys.exc_info())
    line = formatter.format(record)
    assert TOKEN not in line and "RuntimeError" in line


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_start_up_lines_are_read_back_in_either_format(fmt: str) -> None:
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    httpx_level = logging.getLogger("httpx").level  # logs.setup quiets it
    logs.setup("INFO", fmt)
    root.handlers[0].setStream(out)  # type: ignore[attr-defined]
    try:
        log = logging.getLogger("handoff.cli")
        log.info("a message that says listener=fake address=evil port=1: nothing")
        logs.listening(log, "webhook", "http://0.0.0.0:8123/webhook", " (database sqlite)")
        with logs.bound(job=7, repo="acme/calc"):
            logs.listening(log, "metrics", "http://[::1]:9100/metrics")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(httpx_level)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "webhook listening on http://0.0.0.0:8123/webhook" in lines[1]
    assert logs.listeners(lines) == {"webhook": "http://0.0.0.0:8123",
                                     "metrics": "http://[::1]:9100"}
    assert logs.fields_of(lines[2])["job"] == "7"  # bound fields stay on the line
    assert logs.fields_of(lines[0]) == {}
