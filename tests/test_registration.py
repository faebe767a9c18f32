"""Registering the App with GitHub's manifest flow, end to end against the simulator: a
browser opens ``handoff setup``'s page, its form posts the manifest to GitHub, GitHub's
redirect brings the code back, and the App's credentials land in ``.env``, where Handoff
reads them and authenticates as the new App."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import SECRET, headers, labeled
from sim import simulator

from bot.cli import webhook_secret
from bot.config import ROOT, Settings
from bot.doctor import check_config
from bot.github.client import GitHubApp
from bot.github.registration import Registration, new_app_url, register, web_url, write_env
from bot.jobs.store import Store
from bot.receiver.web import create_app
from bot.server import running
from devkit.simulator import Simulator
from handlers import Context

HOOK = "https://handoff.example.org/webhook"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with simulator(tmp_path / "sim") as s:
        yield s


async def browse(url: str) -> tuple[httpx.Response, dict[str, object]]:
    """What a browser does: load the page, submit its form, follow GitHub's redirect."""
    async with httpx.AsyncClient(follow_redirects=True, timeout=20) as browser:
        page = await browser.get(url)
        action = unescape(re.search(r'action="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
        sent = unescape(re.search(r'name="manifest" value="([^"]*)"', page.text).group(1))  # type: ignore[union-attr]
        answer = await browser.post(action, data={"manifest": sent})
        return answer, json.loads(sent)


async def run_flow(reg: Registration) -> tuple[asyncio.Task[dict[str, object]],
                                                httpx.Response, dict[str, object]]:
    started: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(register(reg, ready=started.put_nowait, timeout=30))
    answer, sent = await browse(await asyncio.wait_for(started.get(), 10))
    return task, answer, sent


async def test_setup_registers_the_app_and_handoff_authenticates_as_it(
        sim: Simulator, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# mine\nHANDOFF_MODEL_NAME=gpt-4.1-mini\nHANDOFF_APP_ID=1\n")
    reg = Registration(sim.base_url, HOOK, env, ROOT / "app.yml", name="Handoff Dev")
    task, answer, sent = await run_flow(reg)
    app = await task

    # What GitHub was sent: app.yml's events and permissions, with where to go.
    declared = yaml.safe_load((ROOT / "app.yml").read_text())
    assert sent["default_events"] == declared["default_events"]
    assert sent["default_permissions"] == declared["default_permissions"]
    assert sent["hook_attributes"] == {"url": HOOK, "active": True}
    assert sent["redirect_url"] == f"{reg.base}/callback" and sent["public"] is False
    assert sent["callback_urls"] == [HOOK.rsplit("/", 1)[0] + "/oauth/callback"]
    assert sent["request_oauth_on_install"] is False

    # The browser ends on a page that says what was done, with no secret on it.
    assert answer.status_code == 200 and "handoff-dev" in answer.text
    assert f"{sim.base_url}/apps/handoff-dev/installations/new" in answer.text
    made = sim.world.apps[int(str(app["id"]))]
    assert made.pem.splitlines()[1] not in answer.text
    assert made.webhook_secret not in answer.text

    # .env: private to its owner, other settings kept, the App's credentials in.
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    text = env.read_text()
    assert "# mine" in text and "HANDOFF_MODEL_NAME=gpt-4.1-mini" in text
    assert "HANDOFF_APP_ID=1\n" not in text
    settings = Settings(_env_file=env)  # type: ignore[call-arg]
    assert settings.app_id == str(made.id) and settings.app_slug == "handoff-dev"
    assert settings.webhook_secret and settings.webhook_secret.get_secret_value() == \
        made.webhook_secret
    assert settings.github_url == sim.base_url
    pem = settings.private_key_pem()
    assert pem == made.pem
    assert settings.client_id == made.client_id  # the dashboard's sign-in
    assert settings.client_secret and settings.client_secret.get_secret_value() == \
        made.client_secret
    assert made.client_secret not in answer.text

    # Handoff with those settings is the new App.
    github = GitHubApp(str(settings.app_id), pem, settings.github_url)
    me = await github.app_request("GET", "/app")
    await github.close()
    assert (me["id"], me["slug"]) == (made.id, "handoff-dev")

    # The code worked once.
    async with httpx.AsyncClient() as client:
        again = await client.post(f"{sim.base_url}/app-manifests/{made.code}/conversions")
    assert again.status_code == 404


async def test_organisation_app(sim: Simulator, tmp_path: Path) -> None:
    reg = Registration(sim.base_url, HOOK, tmp_path / ".env", ROOT / "app.yml", org="acme",
                       name="Acme Handoff")
    task, answer, _ = await run_flow(reg)
    app = await task
    assert answer.status_code == 200
    assert app["owner"]["login"] == "acme"  # type: ignore[index]
    assert sim.world.apps[int(str(app["id"]))].owner == "acme"


async def test_a_redirect_for_another_registration_is_refused(
        sim: Simulator, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    reg = Registration(sim.base_url, HOOK, env, ROOT / "app.yml", name="Handoff Other")
    started: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(register(reg, ready=started.put_nowait, timeout=30))
    url = await asyncio.wait_for(started.get(), 10)
    async with httpx.AsyncClient() as browser:
        forged = await browser.get(f"{url}/callback", params={"code": "x", "state": "guess"})
        assert forged.status_code == 400 and not env.exists()
    answer, _ = await browse(url)  # the real one still works
    assert answer.status_code == 200
    await task
    assert env.exists()


def test_where_the_form_is() -> None:
    assert web_url("https://api.github.com") == "https://github.com"
    assert web_url("https://ghe.example.com/api/v3") == "https://ghe.example.com"
    assert new_app_url("https://api.github.com", "s1") == \
        "https://github.com/settings/apps/new?state=s1"
    assert new_app_url("https://ghe.example.com/api/v3", "s1", org="acme") == \
        "https://ghe.example.com/organizations/acme/settings/apps/new?state=s1"


def test_env_file_keeps_other_values(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text('A=1\nHANDOFF_PRIVATE_KEY="-----BEGIN KEY-----\nold\n-----END KEY-----"\n'
                   "B=2\n")
    write_env(env, {"HANDOFF_PRIVATE_KEY": "-----BEGIN KEY-----\nnew\n-----END KEY-----\n"})
    assert env.read_text().splitlines()[:2] == ["A=1", "B=2"]
    assert "old" not in env.read_text()
    settings = Settings(_env_file=env)  # type: ignore[call-arg]
    assert settings.private_key_pem() == "-----BEGIN KEY-----\nnew\n-----END KEY-----\n"


async def test_handoff_setup_command(sim: Simulator, tmp_path: Path) -> None:
    """`handoff setup` as a user runs it: it names a page, the browser does the rest, and
    the command says what to do next without printing the key or the secret."""
    import os
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "setup", "--webhook-url", HOOK, "--github-url",
        sim.base_url, "--name", "Handoff CLI", "--manifest", str(ROOT / "app.yml"),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**clean, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    url = re.search(r"Open (http://127\.0\.0\.1:\d+) ", first).group(1)  # type: ignore[union-attr]
    answer, _ = await browse(url)
    assert answer.status_code == 200
    out = first + (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
    assert await proc.wait() == 0, out
    made = next(a for a in sim.world.apps.values() if a.slug == "handoff-cli")
    assert f"Registered the GitHub App handoff-cli (id {made.id})" in out
    assert f"{sim.base_url}/apps/handoff-cli/installations/new" in out
    assert made.webhook_secret not in out and "PRIVATE KEY" not in out
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    again = await asyncio.create_subprocess_exec(  # a second run would replace the App
        sys.executable, "-m", "bot.cli", "setup", "--webhook-url", HOOK, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, env={**clean, "PYTHONPATH": str(ROOT)})
    said = (await again.communicate())[0].decode()
    assert again.returncode == 1 and "--force" in said


def kubectl_env_file(path: Path) -> dict[str, str]:
    """An env file read as ``kubectl create secret --from-env-file`` reads it: each
    ``KEY=VALUE`` line taken literally (quotes kept), blank lines and ``#`` lines skipped."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.lstrip()
    return values


async def test_env_written_by_setup_reads_alike_in_kubernetes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    """The Kubernetes manifest loads `.env` with kubectl: the App id, key and secret must
    arrive as python-dotenv reads them, so deliveries verify and doctor passes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    env = tmp_path / ".env"
    write_env(env, {"HANDOFF_APP_ID": "123456", "HANDOFF_APP_SLUG": "handoff-acme",
                    "HANDOFF_PRIVATE_KEY": pem, "HANDOFF_WEBHOOK_SECRET": SECRET.decode(),
                    "HANDOFF_PRICES": '{"m": [3, 15]}'})
    from_dotenv = Settings(_env_file=env)  # type: ignore[call-arg]
    for name, value in kubectl_env_file(env).items():
        monkeypatch.setenv(name, value)
    from_kubectl = Settings(_env_file=None)  # type: ignore[call-arg]
    for number, settings in enumerate((from_dotenv, from_kubectl), start=1):
        assert settings.app_id == "123456"
        assert settings.private_key_pem() == pem
        assert {name: ok for ok, name, _ in check_config(settings)}.get("quoted values") is None
        assert all(ok is not False for ok, _, _ in check_config(settings))
        app = create_app(store, webhook_secret(settings), Context())
        body = json.dumps(labeled(number=number)).encode()  # another issue: not a replay
        async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
            resp = await client.post("/webhook", content=body, headers=headers("issues", body))
        assert resp.status_code == 202


def test_doctor_names_quoted_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-written `.env` with quotes, loaded by kubectl, keeps them: doctor says so."""
    monkeypatch.setenv("HANDOFF_APP_ID", '"123456"')
    monkeypatch.setenv("HANDOFF_WEBHOOK_SECRET", "'s3cret'")
    results = check_config(Settings(_env_file=None))  # type: ignore[call-arg]
    quoted = [detail for ok, name, detail in results if name == "quoted values"]
    assert quoted and "HANDOFF_APP_ID, HANDOFF_WEBHOOK_SECRET" in quoted[0]
    assert [ok for ok, name, _ in results if name == "quoted values"] == [False]
