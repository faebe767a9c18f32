"""Dashboard sign-ins shared by web replicas: two `handoff serve` processes on one store, a
person signed in through one is signed in on the other, and signing out on either ends the
session on both. Signing in goes through the simulator's web flow."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa
from helpers import SECRET
from sim import simulator
from test_dashboard_signin import add_job, job_links, sign_in

from bot import logs
from bot.config import Settings
from bot.jobs.schema import sessions
from bot.jobs.store import Store
from devkit.simulator import Simulator

ROOT = Path(__file__).parent.parent


@asynccontextmanager
async def replica(tmp: Path, name: str, sim: Simulator, data: Path) -> AsyncIterator[str]:
    """One `handoff serve --no-worker` on the shared data directory (and its database); its
    base URL, read from its start-up line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env.update(PYTHONPATH=str(ROOT), HANDOFF_PORT="0", HANDOFF_DATA_DIR=str(data),
               HANDOFF_WEBHOOK_SECRET=SECRET.decode(), HANDOFF_GITHUB_URL=sim.base_url,
               HANDOFF_CLIENT_ID=sim.world.client_id,
               HANDOFF_CLIENT_SECRET=sim.world.client_secret)
    log = tmp / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--no-worker"],
                                cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "webhook" not in (found := logs.listeners(log.read_text().splitlines())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        yield found["webhook"]
    finally:
        proc.terminate()
        proc.wait(30)


async def live_sessions(store: Store) -> list[str]:
    async with store.engine.connect() as conn:
        return [r.login for r in await conn.execute(sa.select(sessions.c.login))]


async def test_a_sign_in_holds_on_every_replica_and_a_sign_out_ends_it_everywhere(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(simulator(tmp_path / "sim"))
        sim.add_repo("acme/calc", {"README.md": "x\n"}).collaborators["maya"] = "write"
        sim.add_repo("acme/web", {"README.md": "x\n"})
        one = await stack.enter_async_context(replica(tmp_path, "one", sim, data))
        two = await stack.enter_async_context(replica(tmp_path, "two", sim, data))
        sim.world.callback_urls = [f"{one}/oauth/callback", f"{two}/oauth/callback"]
        store = await Store.open(f"sqlite+aiosqlite:///{data / 'handoff.db'}")
        stack.push_async_callback(store.close)
        settings = Settings(data_dir=data)
        calc = await add_job(store, settings, "acme/calc", 7)
        web = await add_job(store, settings, "acme/web", 3, by="omar")
        # The browser talks to both replicas (a load balancer's choice) with one cookie jar.
        maya = await stack.enter_async_context(httpx.AsyncClient(follow_redirects=True))

        page = await sign_in(maya, f"{one}/jobs/{calc}", "maya")
        assert str(page.url) == f"{one}/jobs/{calc}" and "@maya" in page.text
        # The other replica knows her: same person, same repositories, no new sign-in.
        there = await maya.get(f"{two}/jobs")
        assert there.status_code == 200 and str(there.url) == f"{two}/jobs", there.url
        assert "@maya" in there.text and job_links(there.text) == {str(calc)}
        assert (await maya.get(f"{two}/jobs/{web}")).status_code == 404
        assert len(sim.world.user_tokens) == 1  # one code exchanged, one token
        assert await live_sessions(store) == ["maya"]
        # The store holds neither the cookie's id nor her token.
        cookie = maya.cookies["handoff_session"]
        token = next(iter(sim.world.user_tokens.values())).token
        async with store.engine.connect() as conn:
            row = (await conn.execute(sa.select(sessions))).one()
        assert cookie.rsplit(".", 1)[0] not in str(row) and token not in str(row)

        # Signing out on the second replica ends the session on the first too.
        await maya.post(f"{two}/logout")
        assert "handoff_session" not in maya.cookies and await live_sessions(store) == []
        async with httpx.AsyncClient(cookies={"handoff_session": cookie}) as kept:
            for url in (one, two):
                answer = await kept.get(f"{url}/jobs/{calc}")
                assert answer.status_code == 303, (url, answer.status_code)
                assert answer.headers["location"].startswith("/login")
