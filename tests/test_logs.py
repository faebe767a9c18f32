"""Secrets stay out of log lines, tracebacks included."""

from __future__ import annotations

import logging

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
