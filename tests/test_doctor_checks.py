"""`handoff doctor`'s checks one by one, on the answers an operator can meet: a model endpoint
that refuses the key, errs, answers something else or lists other models (for both providers,
with each provider's own headers); keys that are not RSA or cannot be read; an App GitHub
knows by another slug; a sign-in, database or sandbox that cannot be reached; an agent CLI
image that is not there; the workspace disk's watchdog-only modes."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import unused_port
from pydantic import SecretStr
from sim import simulator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.config import Settings
from bot.doctor import (
    check_agent,
    check_config,
    check_database,
    check_engine,
    check_github,
    check_model,
    check_price,
    check_sign_in,
    check_workspace_disk,
)
from bot.server import running


class Provider:
    """A model API's ``/models``: answers as told, remembers the headers it was sent."""

    def __init__(self) -> None:
        self.answer: Response = JSONResponse({"data": []})
        self.headers: list[dict[str, str]] = []
        self.app = Starlette(routes=[Route("/v1/models", self.models),
                                     Route("/models", self.models)])

    async def models(self, request: Request) -> Response:
        self.headers.append(dict(request.headers))
        return self.answer


@pytest.fixture
async def provider() -> AsyncIterator[tuple[Provider, str]]:
    found = Provider()
    async with running(found.app) as url:
        yield found, url


def settings(**values: Any) -> Settings:
    return Settings(**values)


async def test_the_model_check_says_what_the_endpoint_answered(
        provider: tuple[Provider, str]) -> None:
    api, url = provider
    openai = settings(model_base_url=url, model_api_key=SecretStr("sk-test"),
                      model_name="gpt-4.1")
    api.answer = JSONResponse({"error": "no"}, 401)
    ok, _, detail = await check_model(openai)
    assert ok is False and detail == (f"{url}/models answered 401: the key was refused "
                                      "(HANDOFF_MODEL_API_KEY)")
    assert api.headers[-1]["authorization"] == "Bearer sk-test"
    api.answer = JSONResponse({"error": "busy"}, 503)
    assert await check_model(openai) == (False, "model endpoint", f"{url}/models answered 503")
    api.answer = PlainTextResponse("<html>a login page</html>")
    ok, _, detail = await check_model(openai)
    assert ok is False and detail.endswith("answered 200 but not with a model list")

    anthropic = settings(model_provider="anthropic", model_base_url=url,
                         model_api_key=SecretStr("sk-ant"), model_name="claude-sonnet-4")
    api.answer = JSONResponse({"data": [{"id": "claude-haiku-4"}]})
    ok, _, detail = await check_model(anthropic)
    assert ok is None and detail == (f"{url}/v1/models answers, but does not list "
                                     "claude-sonnet-4 (HANDOFF_MODEL_NAME)")
    assert api.headers[-1]["x-api-key"] == "sk-ant"
    assert api.headers[-1]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in api.headers[-1]


async def test_a_key_that_is_not_rsa_or_cannot_be_read_is_said_so(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    ec_key = dict((what, (ok, detail)) for ok, what, detail in
                  check_config(settings(app_id="1", private_key=SecretStr(pem))))
    assert ec_key["private key"][0] is False
    assert "GitHub Apps sign with RSA keys" in ec_key["private key"][1]
    missing = settings(app_id="1", private_key=SecretStr(str(tmp_path / "gone.pem")))
    unreadable = dict((what, (ok, detail)) for ok, what, detail in check_config(missing))
    assert unreadable["private key"][0] is False
    assert unreadable["private key"][1].startswith("cannot read: [Errno 2] No such file")
    assert await check_github(missing) is None  # said once, by the line above


async def test_an_app_github_knows_by_another_slug_is_a_warning(tmp_path: Path) -> None:
    async with simulator(tmp_path / "github") as sim:
        ok, _, detail = await check_github(settings(
            app_id=str(sim.world.app_id), private_key=SecretStr(sim.private_key),
            github_url=sim.base_url, app_slug="handoff-old"))
    assert ok is None
    assert detail == (f"GitHub knows this App as {sim.world.app_slug!r}; set "
                      f"HANDOFF_APP_SLUG={sim.world.app_slug} so its own comments are ignored")


async def test_unreachable_sign_in_and_database_fail(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{unused_port()}"
    ok, _, detail = await check_sign_in(settings(
        github_url=nowhere, client_id="Iv1.x", client_secret=SecretStr("s")))
    assert ok is False and detail.startswith("GitHub's token exchange failed")
    (tmp_path / "file").write_text("")
    ok, what, detail = await check_database(settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'file' / 'handoff.db'}"))
    assert (ok, what) == (False, "database") and detail.startswith("sqlite+aiosqlite: ")


async def test_an_external_agent_counts_its_own_cost_and_its_image_is_checked() -> None:
    assert check_price(settings(agent_command="my-agent --fix")) == (
        True, "model price", "an external agent counts its own cost")
    assert await check_agent(settings()) is None  # the built-in agent needs no image
    ok, what, detail = await check_agent(settings(agent="codex", sandbox="bubblewrap"))
    assert (ok, what) == (None, "agent codex") and detail.endswith("not checked from here")
    if not shutil.which("podman"):
        pytest.skip("needs Podman")
    ok, _, detail = await check_agent(settings(agent="aider", sandbox="podman",
                                               agent_image="handoff-sandbox:no-such-tag"))
    assert ok is False and detail == ("podman has no image handoff-sandbox:no-such-tag "
                                      "(deploy/sandbox/build.sh --flavour agents builds it)")


async def test_a_sandbox_program_not_installed_is_named(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a host with none of them
    assert await check_engine(settings(sandbox="bubblewrap")) == (
        False, "sandbox", "bwrap not found (apt-get install bubblewrap)")
    assert await check_engine(settings(sandbox="docker")) == (
        False, "sandbox", "docker not found on PATH")


async def test_the_workspace_disk_is_the_watchdog_alone_when_told_or_on_kubernetes() -> None:
    assert await check_workspace_disk(settings(sandbox="kubernetes")) is None
    ok, _, detail = await check_workspace_disk(settings(workspace_volume="off",
                                                        sandbox="bubblewrap"))
    assert ok is None and detail.startswith("watchdog only (HANDOFF_WORKSPACE_VOLUME=off)")


@pytest.fixture(autouse=True)
def _no_handoff_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the arguments alone, not from this shell's HANDOFF_ variables."""
    for name in [n for n in os.environ if n.startswith("HANDOFF_")]:
        monkeypatch.delenv(name)
