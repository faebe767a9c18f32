"""`handoff doctor` tells the truth: against a real (simulated) GitHub, a real model server,
a real sandbox; and a key GitHub refuses is asked about once, not five times."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.github.client import GitHubApiError, GitHubApp
from bot.server import running
from devkit.scripted import ScriptedModel
from devkit.simulator import Simulator

ROOT = Path(__file__).parent.parent
GARBAGE_PEM = "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n"
needs_podman = pytest.mark.skipif(not shutil.which("podman"), reason="needs Podman")


def other_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


async def doctor(tmp: Path, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "doctor", cwd=tmp,
        env={**clean, "PYTHONPATH": str(ROOT), "HANDOFF_DATA_DIR": str(tmp / "data"), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode or 0, out.decode()


def line(out: str, what: str) -> str:
    return next(x for x in out.splitlines() if x[7:].startswith(what))


@pytest.mark.podman
@needs_podman
async def test_ready_when_everything_answers(tmp_path: Path) -> None:
    sim = Simulator(tmp_path / "github")
    model = ScriptedModel([])
    async with running(sim.app) as gh_url, running(model.app) as model_url:
        code, out = await doctor(
            tmp_path, HANDOFF_APP_ID=str(sim.world.app_id), HANDOFF_PRIVATE_KEY=sim.private_key,
            HANDOFF_GITHUB_URL=gh_url, HANDOFF_MODEL_BASE_URL=f"{model_url}/v1",
            HANDOFF_MODEL_NAME="scripted", HANDOFF_SANDBOX="podman",
            HANDOFF_PRICES='{"scripted": [1, 2]}', HANDOFF_WEBHOOK_SECRET="s")
    assert code == 0, out
    assert line(out, "private key").startswith("[ok  ]")
    assert line(out, "github app").startswith("[ok  ]") and "accepts the key" in out
    assert line(out, "sandbox").startswith("[ok  ]") and "ran a command in a sandbox" in out
    assert line(out, "model endpoint").startswith("[ok  ]")
    disk = line(out, "workspace disk")
    assert disk.startswith("[ok  ]") if os.geteuid() == 0 else "watchdog only" in disk
    assert out.strip().endswith("verdict: ready")


async def test_a_key_that_does_not_parse_and_a_404_model_are_failures(tmp_path: Path) -> None:
    nothing = Starlette()  # every path 404s, like a base URL missing its /v1
    async with running(nothing) as url:
        code, out = await doctor(tmp_path, HANDOFF_APP_ID="1", HANDOFF_PRIVATE_KEY=GARBAGE_PEM,
                                 HANDOFF_MODEL_BASE_URL=url, HANDOFF_SANDBOX="bubblewrap",
                                 HANDOFF_MODEL_NAME="local-llama")
    assert code == 1
    assert line(out, "private key").startswith("[FAIL]") and "does not parse" in out
    assert line(out, "model endpoint").startswith("[FAIL]") and "404" in out
    price = line(out, "model price")
    assert price.startswith("[warn]") and "no price for local-llama" in price
    assert "verdict: not ready (private key, model endpoint" in out


async def test_a_key_github_refuses_is_reported_not_retried(tmp_path: Path) -> None:
    sim = Simulator(tmp_path / "github")
    async with running(sim.app) as gh_url:
        code, out = await doctor(tmp_path, HANDOFF_APP_ID=str(sim.world.app_id),
                                 HANDOFF_PRIVATE_KEY=other_key(), HANDOFF_GITHUB_URL=gh_url,
                                 HANDOFF_MODEL_BASE_URL="http://127.0.0.1:9/v1",
                                 HANDOFF_SANDBOX="bubblewrap")
    assert code == 1
    assert line(out, "private key").startswith("[ok  ]")
    assert line(out, "github app").startswith("[FAIL]") and "401" in line(out, "github app")


async def test_bad_keys_are_tried_once() -> None:
    """A key GitHub refuses (401) and a key that cannot sign: one request at most, at once."""
    hits: list[str] = []

    async def refuse(request: Request) -> JSONResponse:
        hits.append(request.url.path)
        return JSONResponse({"message": "A JSON web token could not be decoded"}, 401)

    github = Starlette(routes=[Route("/app", refuse)])
    async with running(github) as url:
        async with GitHubApp("1", other_key(), url) as app:
            with pytest.raises(GitHubApiError, match="401"):
                await app.app_request("GET", "/app")
        assert hits == ["/app"]
        async with GitHubApp("1", GARBAGE_PEM, url) as app:
            with pytest.raises(GitHubApiError, match="private key cannot sign"):
                await asyncio.wait_for(app.app_request("GET", "/app"), 5)
        assert hits == ["/app"]


def test_common_models_have_prices_out_of_the_box() -> None:
    from bot.prices import lookup, price_for

    assert lookup("gpt-4.1") == (2.0, 8.0)  # the default MODEL_NAME: MAX_COST_USD works
    assert lookup("gpt-4.1-mini-2025-04-14") == (0.40, 1.60)  # a dated snapshot
    assert lookup("claude-sonnet-4-20250514") == (3.0, 15.0)
    assert lookup("anthropic/claude-sonnet-4-5") == (3.0, 15.0)  # OpenRouter's names
    assert lookup("gpt-4.1", {"gpt-4.1": (1.0, 1.0)}) == (1.0, 1.0)  # settings win
    assert lookup("my-local-llama") is None
    assert price_for("my-local-llama") == (0.0, 0.0)


async def test_doctor_names_the_default_models_price(tmp_path: Path) -> None:
    code, out = await doctor(tmp_path, HANDOFF_MODEL_BASE_URL="http://127.0.0.1:9/v1",
                             HANDOFF_SANDBOX="bubblewrap")
    assert line(out, "model price").startswith("[ok  ] model price        gpt-4.1: $2 in, $8 out")


async def test_sign_in_check_asks_github_about_the_client(tmp_path: Path) -> None:
    from pydantic import SecretStr
    from sim import simulator

    from bot.config import Settings
    from bot.doctor import check_sign_in

    async with simulator(tmp_path / "github") as sim:
        def settings(**values: object) -> Settings:
            return Settings(github_url=sim.base_url, public_url="https://h.example",
                            **values)  # type: ignore[arg-type]

        ok, _, detail = await check_sign_in(settings(
            client_id=sim.world.client_id, client_secret=SecretStr(sim.world.client_secret)))
        assert ok is True and "https://h.example/oauth/callback" in detail
        ok, _, detail = await check_sign_in(settings(
            client_id=sim.world.client_id, client_secret=SecretStr("wrong")))
        assert ok is False and "client_id and/or client_secret passed are incorrect" in detail
        ok, _, detail = await check_sign_in(settings(client_id=sim.world.client_id))
        assert ok is False and "HANDOFF_CLIENT_SECRET" in detail
        ok, _, detail = await check_sign_in(settings())
        assert ok is None and detail.startswith("off:")
