"""`handoff setup`'s registration when it does not go to plan, against the simulator: GitHub's
redirect with no code, a code GitHub refuses, a GitHub that cannot be reached, a second
redirect after the App was made, nobody finishing in time, and no ``app.yml``. Each says what
happened, on the page and to the command, and writes no ``.env``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from helpers import unused_port
from sim import simulator
from test_registration import HOOK, browse

from bot.config import ROOT
from bot.github.registration import Registration, RegistrationError, find_manifest, register
from bot.server import running


def registration(api_url: str, tmp_path: Path) -> Registration:
    return Registration(api_url, HOOK, tmp_path / ".env", ROOT / "app.yml", name="Handoff Dev")


async def started(reg: Registration, timeout: float = 30) -> tuple[asyncio.Task[object], str]:
    """``register`` serving its page, and the page's address."""
    ready: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(register(reg, ready=ready.put_nowait, timeout=timeout))
    return task, await asyncio.wait_for(ready.get(), 10)


async def test_a_code_github_refuses_fails_the_registration(tmp_path: Path) -> None:
    async with simulator(tmp_path / "sim") as sim:
        reg = registration(sim.base_url, tmp_path)
        task, url = await started(reg)
        async with httpx.AsyncClient() as browser:
            empty = await browser.get(f"{url}/callback", params={"state": reg.state})
            refused = await browser.get(f"{url}/callback",
                                        params={"state": reg.state, "code": "used-up"})
        with pytest.raises(RegistrationError) as error:
            await task
    assert empty.status_code == 400 and "GitHub sent no code" in empty.text
    assert refused.status_code == 502
    assert "Registration failed: GitHub refused the code: 404" in refused.text
    assert str(error.value).startswith("GitHub refused the code: 404")
    assert not (tmp_path / ".env").exists()


async def test_a_github_that_cannot_be_reached_is_named(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{unused_port()}"
    reg = registration(api, tmp_path)
    task, url = await started(reg)
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(f"{url}/callback", params={"state": reg.state, "code": "c"})
    with pytest.raises(RegistrationError) as error:
        await task
    assert answer.status_code == 502
    assert str(error.value).startswith(f"could not reach GitHub at {api}")
    assert not (tmp_path / ".env").exists()


async def test_a_second_redirect_after_the_app_was_made_changes_nothing(tmp_path: Path) -> None:
    async with simulator(tmp_path / "sim") as sim:
        reg = registration(sim.base_url, tmp_path)
        async with running(reg.asgi()) as url:
            reg.base = url
            answer, _ = await browse(url)
            written = (tmp_path / ".env").read_text()
            async with httpx.AsyncClient() as browser:
                again = await browser.get(f"{url}/callback",
                                          params={"state": reg.state, "code": "another"})
    assert answer.status_code == 200 and reg.app is not None
    assert again.status_code == 409 and "Already registered" in again.text
    assert (tmp_path / ".env").read_text() == written


async def test_nobody_finishing_in_time_ends_the_wait(tmp_path: Path) -> None:
    reg = registration(f"http://127.0.0.1:{unused_port()}", tmp_path)
    task, _ = await started(reg, timeout=1)
    with pytest.raises(RegistrationError, match="no answer from GitHub in 1s"):
        await task


def test_no_app_yml_is_said_so(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError) as error:
        find_manifest(tmp_path / "app.yml")
    assert str(error.value) == f"no app.yml found (looked for {tmp_path / 'app.yml'})"
    assert find_manifest() in (Path("app.yml"), ROOT / "app.yml")  # the checkout's own
