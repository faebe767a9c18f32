"""A failed setup's warning quotes its cause: for npm, the error code and message from a real
npm run, never its closing "complete log" line (a path in a sandbox that no longer exists)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import unused_port

from bot.executor.sandbox import CommandResult
from bot.executor.setup import setup_cause

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")


def _npm_install(folder: Path, registry: str) -> CommandResult:
    folder.mkdir()
    (folder / "package.json").write_text(json.dumps(
        {"name": "app", "version": "1.0.0", "dependencies": {"left-pad": "1.3.0"}}))
    done = subprocess.run(["npm", "install", "--registry", registry, "--fetch-retries=0",
                           "--cache", str(folder / ".cache")], cwd=folder, capture_output=True,
                          text=True, timeout=120)
    return CommandResult(done.returncode, done.stdout, done.stderr)


def test_a_refused_connection_is_named_not_the_log_path(tmp_path: Path) -> None:
    result = _npm_install(tmp_path / "app", f"http://127.0.0.1:{unused_port()}/")
    assert "complete log of this run" in result.stderr  # what the warning used to quote
    cause = setup_cause(result)
    assert cause.startswith("npm error code ECONNREFUSED: ") and "left-pad failed" in cause


async def test_a_missing_package_is_named(tmp_path: Path) -> None:
    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(not_found, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await asyncio.to_thread(_npm_install, tmp_path / "app",
                                         f"http://127.0.0.1:{port}/")
    finally:
        server.close()
    cause = setup_cause(result)
    assert cause.startswith("npm error code E404: 404 Not Found - GET http://127.0.0.1:"), cause


def test_other_tools_keep_their_first_error_line() -> None:
    pip = CommandResult(1, "Collecting foo\n", "ERROR: Could not find a version that satisfies "
                        "the requirement foo\nERROR: No matching distribution found for foo\n")
    assert setup_cause(pip) == ("ERROR: Could not find a version that satisfies the "
                                "requirement foo")
    assert setup_cause(CommandResult(3, "", "missing-tool\n")) == "missing-tool"
