"""Signing in to the dashboard with GitHub (the simulator's web flow): each person sees the
jobs of the repositories they can read, and nothing else; and the charts, in Chromium."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from helpers import seed_state
from pydantic import SecretStr
from sim import simulator
from test_dashboard import (
    TOKEN,
    bash,
    browser_page,
    needs_browser,
    screenshot,
    served,
    write_entries,
)

from bot.config import Settings
from bot.jobs.store import Store
from devkit.simulator import Simulator

DAY = 86400.0


@asynccontextmanager
async def world(tmp: Path, api: str = "",
                **overrides: Any) -> AsyncIterator[tuple[str, Store, Settings, Simulator]]:
    """The simulator with two repositories (maya reads acme/calc only) and the dashboard,
    signing in through the simulator; the App's callback URL registered there."""
    async with simulator(tmp / "sim") as sim:
        sim.add_repo("acme/calc", {"README.md": "x\n"}).collaborators["maya"] = "write"
        sim.add_repo("acme/web", {"README.md": "x\n"}).collaborators["omar"] = "read"
        async with served(tmp, github_url=sim.base_url + api, client_id=sim.world.client_id,
                          client_secret=SecretStr(sim.world.client_secret),
                          dashboard_token=SecretStr(TOKEN), **overrides) as (url, store, s):
            sim.world.callback_urls = [f"{url}/oauth/callback"]
            yield url, store, s, sim


async def add_job(store: Store, settings: Settings, repo: str, issue: int, state: str = "succeeded",
                  days_ago: float = 0.0, by: str = "maya", cost: float = 0.01,
                  timings: dict[str, float] | None = None) -> int:
    created = time.time() - days_ago * DAY
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo=repo, issue_number=issue, requested_by=by,
        installation_id=1, created_at=created, result={
            "spend": {"cost_usd": cost, "steps": 3, "input_tokens": 900, "output_tokens": 50},
            "timings": timings or {"setup": 2.0, "agent": 30.0, "tests": 5.0}}))
    assert job_id is not None
    if state != "queued":
        await seed_state(store, job_id, state, stage="done", started_at=created + 20,
                         finished_at=None if state == "running" else created + 60,
                         reason="tests still fail" if state == "failed" else "")
    write_entries(settings, job_id, [bash(1, "ls", f"files of {repo}")])
    return job_id


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def sign_in(http: httpx.AsyncClient, start: str, login: str) -> httpx.Response:
    """A person follows a dashboard link, signs in to GitHub and authorizes the App; the
    page they end on."""
    page = await http.get(start)
    assert "Sign in with GitHub" in page.text, page.text
    link = page.text.split('id="sign-in-github" href="')[1].split('"')[0].replace("&amp;", "&")
    page = await http.get(str(page.url.join(link)))
    assert "Sign in to GitHub" in page.text  # the simulator's sign-in form
    page = await http.post(str(page.url.join("/session")), data={
        "login": login, "password": "x", "return_to": query(str(page.url))["return_to"]})
    assert "Authorize Handoff" in page.text
    form = {k: page.text.split(f'name="{k}" value="')[1].split('"')[0]
            for k in ("client_id", "redirect_uri", "state", "authenticity_token")}
    return await http.post(str(page.url.join("/login/oauth/authorize")),
                           data={**form, "authorize": "1"})


def job_links(html: str) -> set[str]:
    return {part.split("'")[0].split('"')[0] for part in html.split('href="/jobs/')[1:]}


async def test_each_person_sees_only_what_they_can_read(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with world(tmp_path) as (url, store, settings, sim):
        calc = await add_job(store, settings, "acme/calc", 7)
        web = await add_job(store, settings, "acme/web", 3, by="omar")
        async with httpx.AsyncClient(follow_redirects=True) as maya:
            # A reviewer follows the PR's transcript link, signs in, and lands on it.
            page = await sign_in(maya, f"{url}/jobs/{calc}", "maya")
            assert page.status_code == 200 and str(page.url) == f"{url}/jobs/{calc}"
            assert "files of acme/calc" in page.text and "@maya" in page.text
            cookies = [c for r in page.history for c in r.headers.get_list("set-cookie")
                       if "handoff_session=" in c]
            assert cookies and all("HttpOnly" in c and "SameSite=lax" in c for c in cookies)
            listing = (await maya.get(f"{url}/jobs")).text
            assert job_links(listing) == {str(calc)}
            assert "acme/web" not in listing
            # Another repository's transcript is not there for her, page or feed.
            assert (await maya.get(f"{url}/jobs/{web}")).status_code == 404
            assert (await maya.get(f"{url}/jobs/{web}/feed")).status_code == 404

            async with httpx.AsyncClient(follow_redirects=True) as stranger:
                page = await sign_in(stranger, f"{url}/jobs", "stranger")
                assert str(page.url) == f"{url}/jobs" and "@stranger" in page.text
                assert job_links(page.text) == set()
                assert "No jobs in the repositories you can read" in page.text
                assert (await stranger.get(f"{url}/jobs/{calc}")).status_code == 404

            # The operator's token still sees everything.
            admin = await maya.get(f"{url}/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
            assert job_links(admin.text) == {str(calc), str(web)}

            # Logging out ends the session on the server: the old cookie opens nothing.
            session = maya.cookies["handoff_session"]
            await maya.post(f"{url}/logout")
            assert "handoff_session" not in maya.cookies
            async with httpx.AsyncClient(cookies={"handoff_session": session}) as thief:
                replay = await thief.get(f"{url}/jobs")
            assert replay.status_code == 303 and replay.headers["location"].startswith("/login")
        tokens = [t.token for t in sim.world.user_tokens.values()]
        assert tokens and not any(t in caplog.text for t in tokens)  # nor in a cookie above
        assert not any(t in session for t in tokens)


async def test_state_must_match_this_browser(tmp_path: Path) -> None:
    async with world(tmp_path) as (url, store, settings, sim), \
            httpx.AsyncClient() as victim, httpx.AsyncClient() as attacker:
        # The attacker gets a code for their own GitHub account ...
        start = await attacker.get(f"{url}/oauth/login")
        assert start.status_code == 303 and "handoff_oauth_state" in attacker.cookies
        target = query(start.headers["location"])
        await attacker.post(f"{sim.base_url}/session", data={"login": "mallory"})
        sim.world.authorized.add(("mallory", sim.world.client_id))
        back = await attacker.get(f"{sim.base_url}/login/oauth/authorize", params=target)
        callback = back.headers["location"]
        assert query(callback)["state"] == target["state"]
        # ... and sends the victim's browser to the callback: refused, no session made.
        answer = await victim.get(callback)
        assert answer.status_code == 400 and "state does not match" in answer.text
        assert "handoff_session" not in victim.cookies
        # A state that differs from the browser's own cookie is refused too.
        await victim.get(f"{url}/oauth/login")
        wrong = callback.replace(f"state={target['state']}", "state=forged")
        assert (await victim.get(wrong)).status_code == 400
        # GitHub's own refusal (the person pressed Cancel) is said, not a session.
        mine = query((await victim.get(f"{url}/oauth/login")).headers["location"])["state"]
        denied = await victim.get(f"{url}/oauth/callback", params={
            "error": "access_denied", "error_description": "The user has denied your "
            "application access.", "state": mine})
        assert denied.status_code == 403 and "denied" in denied.text
        # A next= to another site is not followed after signing in.
        away = await victim.get(f"{url}/oauth/login", params={"next": "//evil.example/x"})
        assert victim.cookies["handoff_oauth_state"] and away.status_code == 303
        assert len(sim.world.user_tokens) == 0  # no code was exchanged


async def test_repository_list_is_asked_again(tmp_path: Path) -> None:
    """Also GitHub Enterprise Server's layout: the API under /api/v3, sign-in at the root."""
    async with world(tmp_path, api="/api/v3", repo_cache_seconds=0) as (
            url, store, settings, sim), \
            httpx.AsyncClient(follow_redirects=True) as maya:
        calc = await add_job(store, settings, "acme/calc", 7)
        assert (await sign_in(maya, f"{url}/jobs/{calc}", "maya")).status_code == 200
        del sim.get_repo("acme/calc").collaborators["maya"]  # her access is taken away
        assert (await maya.get(f"{url}/jobs/{calc}")).status_code == 404
        sim.world.user_tokens.clear()  # GitHub revokes the token: the session ends
        answer = await maya.get(f"{url}/jobs", follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


async def test_sessions_expire(tmp_path: Path) -> None:
    async with world(tmp_path, session_hours=1.5 / 3600) as (url, store, settings, sim), \
            httpx.AsyncClient(follow_redirects=True) as maya:
        page = await sign_in(maya, f"{url}/jobs", "maya")
        assert page.status_code == 200 and "@maya" in page.text
        cookie = next(c for r in page.history for c in r.headers.get_list("set-cookie")
                      if c.startswith("handoff_session="))
        assert "Max-Age=1;" in cookie or "Max-Age=0;" in cookie
        await asyncio.sleep(1.6)
        # The browser would drop it; one that kept it is turned away by the server.
        async with httpx.AsyncClient(cookies={"handoff_session": cookie.split(";")[0].split(
                "=", 1)[1]}) as kept:
            answer = await kept.get(f"{url}/jobs")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


async def test_filters_and_search(tmp_path: Path) -> None:
    async with world(tmp_path) as (url, store, settings, sim), \
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        ok = await add_job(store, settings, "acme/calc", 7)
        bad = await add_job(store, settings, "acme/calc", 8, state="failed", by="omar")
        web = await add_job(store, settings, "acme/web", 3, by="omar")
        assert job_links((await http.get("/jobs", params={"repo": "acme/web"})).text) == \
            {str(web)}
        assert job_links((await http.get("/jobs", params={"person": "omar"})).text) == \
            {str(bad), str(web)}
        assert job_links((await http.get("/jobs", params={"state": "failed"})).text) == \
            {str(bad)}
        assert job_links((await http.get("/jobs", params={"q": "still fail"})).text) == \
            {str(bad)}
        assert job_links((await http.get("/jobs", params={"q": "#7"})).text) >= {str(ok)}
        assert "No jobs match." in (await http.get("/jobs", params={"q": "nothing"})).text


@needs_browser
async def test_sign_in_and_charts_in_chromium(tmp_path: Path) -> None:
    async with world(tmp_path) as (url, store, settings, sim):
        for n, (state, days) in enumerate([("succeeded", 0), ("succeeded", 1), ("failed", 1),
                                           ("succeeded", 2), ("cancelled", 3), ("failed", 4),
                                           ("succeeded", 5), ("running", 0), ("queued", 0)]):
            await add_job(store, settings, "acme/calc" if n % 3 else "acme/web", 10 + n,
                          state=state, days_ago=days + 0.1, by="maya" if n % 2 else "omar",
                          cost=0.02 * (n + 1), timings={"setup": 1.0 + n, "agent": 20.0 + 5 * n,
                                                        "tests": 3.0 + n})
        sim.get_repo("acme/web").collaborators["maya"] = "read"  # she reads both
        async with browser_page(tmp_path) as page:
            await page.goto(f"{url}/jobs")
            assert "/login?next=" in page.url
            await screenshot(page, tmp_path, "login.png")
            await page.click("#sign-in-github")
            await page.fill("#login_field", "maya")
            await page.click("input[type=submit]")
            await page.click("#js-oauth-authorize-btn")
            await page.wait_for_url(f"{url}/jobs")
            assert "@maya" in await page.inner_text("header")
            for name in ("jobs-per-day", "success-rate", "cost-per-day", "cost-per-repo",
                         "stage-times", "queue"):
                assert await page.locator(f"#chart-{name} > svg").count() == 1, name
            assert await page.locator("#chart-jobs-per-day rect.bar-succeeded").count() == 4
            assert await page.locator("#chart-jobs-per-day rect.bar-failed").count() == 2
            assert await page.locator("#chart-cost-per-repo rect.bar").count() == 2
            assert await page.locator("#chart-stage-times rect.bar-p95").count() == 3
            assert await page.locator("#chart-queue polyline.line").count() == 1
            box = await page.locator("#chart-jobs-per-day > svg").bounding_box()
            assert box and box["width"] > 300 and box["height"] > 100
            pixels = colours(await screenshot(page, tmp_path, "dashboard.png"))
            assert len(pixels) > 20  # not a blank page
            for mark in ("#2da44e", "#cf222e", "#8250df", "#bf8700", "#bc4c00"):  # drawn
                assert tuple(bytes.fromhex(mark[1:])) in pixels, mark
            await page.select_option("select[name=state]", "failed")
            await page.click("#filters button[type=submit]")
            await page.wait_for_url("**state=failed**")
            assert await page.locator("#chart-jobs-per-day rect.bar-succeeded").count() == 0
            assert await page.locator("table.jobs tbody tr").count() == 2
            await screenshot(page, tmp_path, "dashboard-failed.png")


def colours(path: Path) -> set[tuple[int, int, int]]:
    """The colours a PNG screenshot (8-bit RGB or RGBA, as Chromium writes) holds."""
    data, pos, chunks = path.read_bytes(), 8, {}
    idat = b""
    while pos < len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + size]
        chunks.setdefault(kind, body)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + size
    width, height = int.from_bytes(chunks[b"IHDR"][:4], "big"), \
        int.from_bytes(chunks[b"IHDR"][4:8], "big")
    depth, kind = chunks[b"IHDR"][8], chunks[b"IHDR"][9]
    assert depth == 8 and kind in (2, 6)
    bpp = 3 if kind == 2 else 4
    raw, stride, prev, seen = zlib.decompress(idat), width * bpp, bytearray(width * bpp), set()
    for y in range(height):
        f, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                row[i] = (row[i] + a) & 255
            elif f == 2:
                row[i] = (row[i] + b) & 255
            elif f == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        seen.update(zip(row[0::bpp], row[1::bpp], row[2::bpp], strict=True))
        prev = row
    return seen


def test_another_replica_checks_the_state_cookie(tmp_path: Path) -> None:
    from bot.dashboard.signin import GitHubSignIn

    settings = Settings(data_dir=tmp_path, client_id="Iv1.x", client_secret=SecretStr("s1"))
    target, cookie = GitHubSignIn(settings).start("https://h.example/oauth/callback", "/jobs/3")
    state = query(target)["state"]
    assert GitHubSignIn(settings).check_state(cookie, state) == "/jobs/3"
    assert GitHubSignIn(settings).check_state(cookie, "other") is None
    other = Settings(data_dir=tmp_path, client_id="Iv1.x", client_secret=SecretStr("s2"))
    assert GitHubSignIn(other).check_state(cookie, state) is None
