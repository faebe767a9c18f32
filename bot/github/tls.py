"""One TLS context for every outgoing HTTPS client.

Building a context loads the CA bundle, tens of milliseconds of CPU; the GitHub and model
clients are made per call, so each built its own, on the event loop, where it held up the
webhook receiver (bench/load.py: receiver p99 over 200 ms while jobs ran).
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once per process."""
    return httpx.create_ssl_context()
