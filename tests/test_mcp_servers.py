"""What a job's tool call says when an MCP server fails: a remote one that cannot be reached,
never answers, or errs; a remote host that does not resolve; a local one that answers a
JSON-RPC error (run through the ``local`` test sandbox: the relay as the sandbox runs it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import unused_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bot.executor.agent.mcp.servers import LocalServer, RemoteServer, ServerError, reachable
from bot.executor.repo_config import McpServer
from bot.executor.sandbox import Limits
from bot.executor.sandbox.local import LocalBackend
from bot.server import running

FACTS = Path(__file__).parent / "fixtures" / "mcp" / "stdio_server.py"


async def ask(url: str, timeout: float = 10) -> str:
    """Why listing the tools of the remote server at ``url`` failed."""
    with pytest.raises(ServerError) as error:
        await RemoteServer("docs", McpServer(url=url, timeout=timeout), {}).request(
            "tools/list", {})
    return str(error.value)


async def test_a_remote_server_nobody_serves_is_unreachable() -> None:
    assert await ask(f"http://127.0.0.1:{unused_port()}/mcp") == \
        "unreachable: ConnectError: All connection attempts failed"


async def test_a_remote_server_that_never_answers_is_given_up_at_its_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        started = asyncio.get_running_loop().time()
        said = await ask(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp", 1)
    finally:
        server.close()
        await server.wait_closed()
    assert said == "no answer within 1s"
    assert asyncio.get_running_loop().time() - started < 5


async def test_a_remote_server_that_errs_says_its_status() -> None:
    async def broken(request: Request) -> PlainTextResponse:
        return PlainTextResponse("boom", 500)

    app = Starlette(routes=[Route("/mcp", broken, methods=["GET", "POST", "DELETE"])])
    async with running(app) as url:
        said = await ask(f"{url}/mcp")
    assert said.startswith("unreachable: HTTPStatusError: Server error '500 Internal Server "
                           "Error'")


async def test_a_remote_host_that_does_not_resolve_is_not_reached() -> None:
    said = await reachable("https://mcp.no-such-host.invalid/mcp",
                           ["mcp.no-such-host.invalid"], False)
    assert said.startswith("mcp.no-such-host.invalid does not resolve (")


async def test_a_local_servers_json_rpc_error_is_its_answer(tmp_path: Path) -> None:
    sandbox = await LocalBackend(Limits()).start("mcp-errors", tmp_path)
    try:
        server = LocalServer("facts", McpServer(command="python3", args=[str(FACTS)],
                                                timeout=20), sandbox)
        listed = await server.request("tools/list", {})
        with pytest.raises(ServerError) as error:
            await server.request("resources/list", {})
    finally:
        await sandbox.close()
    assert [t["name"] for t in listed["tools"]][0] == "lookup"
    assert str(error.value) == "the server answered an error: no such method"


async def test_a_remote_server_refusing_to_start_a_session_says_its_error() -> None:
    async def refusing(request: Request) -> JSONResponse:
        if request.method != "POST":
            return JSONResponse({}, 405)
        asked = await request.json()
        return JSONResponse({"jsonrpc": "2.0", "id": asked.get("id"),
                             "error": {"code": -32602, "message": "unsupported protocol"}})

    app = Starlette(routes=[Route("/mcp", refusing, methods=["GET", "POST", "DELETE"])])
    async with running(app) as url:
        said = await ask(f"{url}/mcp")
    assert said == "the server answered an error: unsupported protocol"
