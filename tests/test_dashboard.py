"""The dashboard: its token gate, escaping, live updates, and a real job seen in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT, TEST_COMMAND
from helpers import seed_state
from pydantic import SecretStr

from bot import dashboard
from bot.config import Settings
from bot.jobs.store import Store
from bot.receiver.web import create_app
from bot.reporter.status import StatusComment
from bot.server import running
from handlers import Context

TOKEN = "dash-token-0f9e8d7c6b5a"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
INJECTED = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"


def chromium_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return "needs Debian's chromium (apt-get install -y chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "needs the playwright Python package (pip install playwright)"
    return None


needs_browser = pytest.mark.skipif(chromium_reason() is not None,
                                   reason=chromium_reason() or "")


@asynccontextmanager
async def browser_page(tmp: Path) -> AsyncIterator[Any]:
    """A page in Debian's headless Chromium, driven by Playwright (no browser download)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            yield page
        finally:
            await browser.close()


async def screenshot(page: Any, tmp: Path, name: str) -> Path:
    path = tmp / name
    await page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"dashboard screenshot: {path}")
    return path


@asynccontextmanager
async def served(tmp: Path, **overrides: Any) -> AsyncIterator[tuple[str, Store, Settings]]:
    """Handoff's web app with the dashboard, on a store of its own."""
    settings = Settings(data_dir=tmp / "data", **overrides)
    store = await Store.open(f"sqlite+aiosqlite:///{tmp / 'handoff.db'}")
    app = create_app(store, b"secret", Context("agent", "handoff[bot]"),
                     routes=dashboard.routes(store, settings))
    try:
        async with running(app) as url:
            yield url, store, settings
    finally:
        await store.close()


async def add_job(store: Store, settings: Settings, entries: list[dict[str, Any]],
                  state: str = "running", **result: Any) -> int:
    job_id = await store.write(lambda conn: store.insert_job(
        conn, kind="implement", repo="acme/calc", issue_number=7, requested_by="maya",
        installation_id=1, result=result))
    assert job_id is not None
    await seed_state(store, job_id, state, stage="agent", started_at=time.time() - 5)
    write_entries(settings, job_id, entries)
    return job_id


def write_entries(settings: Settings, job_id: int, entries: list[dict[str, Any]]) -> None:
    path = settings.data_dir / "transcripts" / f"job-{job_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for entry in entries:
            fh.write(json.dumps({"at": time.time(), **entry}) + "\n")


def bash(step: int, command: str, output: str) -> dict[str, Any]:
    return {"kind": "tool", "step": step, "name": "bash", "arguments": {"command": command},
            "ok": True, "result": output, "seconds": 0.2}


async def test_off_without_a_token(tmp_path: Path) -> None:
    async with served(tmp_path) as (url, _, _), httpx.AsyncClient(base_url=url) as http:
        for path in ("/jobs", "/jobs/1", "/login", "/jobs/1/feed"):
            answer = await http.get(path, headers={"Authorization": "Bearer x"})
            assert answer.status_code == 404, path
            assert "dashboard is off" in answer.text
        assert (await http.get("/healthz")).status_code == 200


async def test_token_gate_cookie_and_headers(tmp_path: Path) -> None:
    async with served(tmp_path, dashboard_token=SecretStr(TOKEN)) as (url, store, settings), \
            httpx.AsyncClient(base_url=url) as http:
        await add_job(store, settings, [])
        answer = await http.get("/jobs")
        assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fjobs"
        assert (await http.get("/jobs/1/feed")).status_code == 401
        assert (await http.get("/jobs", headers={"Authorization": "Bearer nope"})) \
            .status_code == 401
        answer = await http.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and "acme/calc#7" in answer.text
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"

        assert (await http.post("/login", data={"token": "wrong"})).status_code == 403
        answer = await http.post("/login", data={"token": TOKEN})
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie  # a value derived from the token, not the token
        assert (await http.get("/jobs")).status_code == 200  # the client kept the cookie
        feed = (await http.get("/jobs/1/feed")).json()
        assert feed["live"] and feed["state"] == "running"
        await http.post("/logout")
        assert (await http.get("/jobs")).status_code == 303


async def test_transcript_is_escaped_and_redacted(tmp_path: Path) -> None:
    key = "sk-model-key-abcdef0123456789"
    async with served(tmp_path, dashboard_token=SecretStr(TOKEN),
                      model_api_key=SecretStr(key)) as (url, store, settings), \
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        job = await add_job(store, settings, [bash(1, "cat notes", f"{INJECTED} {key}")])
        page = (await http.get(f"/jobs/{job}")).text
        assert "&lt;script&gt;window.pwned" in page and "<script>window" not in page
        assert key not in page and "[redacted]" in page
        feed = (await http.get(f"/jobs/{job}/feed", params={"after": 0})).json()
        assert "&lt;script&gt;" in feed["html"] and key not in feed["html"]
        assert (await http.get(f"/jobs/{job}/feed", params={"after": 1})).json()["html"] == ""


def test_status_comment_links_the_job() -> None:
    status = StatusComment(None, 1, 42, link="https://handoff.example/jobs/42")  # type: ignore[arg-type]
    assert "[job 42](https://handoff.example/jobs/42)" in status.text("agent")
    assert "· job 42 ·" in StatusComment(None, 1, 42).text("agent")  # type: ignore[arg-type]


@needs_browser
async def test_live_updates_in_chromium(tmp_path: Path) -> None:
    async with served(tmp_path, dashboard_token=SecretStr(TOKEN)) as (url, store, settings), \
            browser_page(tmp_path) as page:
        job = await add_job(store, settings, [bash(1, "ls", "calc.py")])
        await page.goto(f"{url}/login")
        await page.fill("#token", TOKEN)
        await page.click("button[type=submit]")
        await page.goto(f"{url}/jobs/{job}")
        assert await page.locator("#live").is_visible()
        write_entries(settings, job, [bash(2, "echo step-two", f"step-two {INJECTED}")])
        await page.wait_for_selector("text=step-two <script>", timeout=10_000)
        assert await page.evaluate("window.pwned") is None
        await seed_state(store, job, "succeeded", stage="done", finished_at=time.time())
        await page.wait_for_selector(".state-succeeded", timeout=10_000)
        await page.wait_for_selector("#live[hidden]", state="attached", timeout=10_000)
        await screenshot(page, tmp_path, "live.png")


def podman_reason() -> str | None:
    if not shutil.which("podman") or subprocess.run(
            ["podman", "image", "exists", "handoff-sandbox:dev"]).returncode != 0:
        return "needs Podman and the handoff-sandbox:dev image (deploy/sandbox/build.sh)"
    return chromium_reason()


@pytest.mark.skipif(podman_reason() is not None, reason=podman_reason() or "")
async def test_a_real_job_in_chromium(tmp_path: Path) -> None:
    """Label an issue, let the agent fix it in Podman, then read it all in the dashboard."""
    from devkit.stack import stack

    injected = {"tool": "bash", "args": {"command": f"echo \"{INJECTED}\""},
                "usage": {"input": 900, "output": 20}}
    public = "https://handoff.example"
    async with stack(tmp_path, [injected, *FIX_SCRIPT], dashboard_token=SecretStr(TOKEN),
                     public_url=public) as s:
        s.sim.add_repo("acme/calc", {**BUGGY_REPO,
                                     ".github/handoff.yml": f"test_command: {TEST_COMMAND}\n"})
        job = await s.handed_over("acme/calc", "add() subtracts", "add(2, 3) must be 5")
        assert job.state == "succeeded", job.reason
        issue = s.sim.get_repo("acme/calc").issues[job.issue_number]
        pr = next(i for i in s.sim.get_repo("acme/calc").issues.values() if i.pull)
        assert f"{public}/jobs/{job.id}" in pr.body
        assert any(f"[job {job.id}]({public}/jobs/{job.id})" in c.body for c in issue.comments)

        url = s.sim.webhook_url.removesuffix("/webhook")
        async with browser_page(tmp_path) as page:
            await page.goto(f"{url}/jobs")
            assert "/login?next=" in page.url  # not logged in yet
            await page.fill("#token", TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{url}/jobs")
            row = page.locator(f"a[href='/jobs/{job.id}']")
            assert await row.count() == 1
            listing = await page.inner_text("table.jobs")
            assert "succeeded" in listing and "acme/calc#" in listing and "$0." in listing
            await screenshot(page, tmp_path, "jobs.png")
            await row.click()
            await page.wait_for_url(f"{url}/jobs/{job.id}")
            text = await page.inner_text("#transcript")
            assert "<script>window.pwned = 1</script>" in text  # shown as text
            assert "return a + b" in text and "add() subtracted" in text
            assert await page.evaluate("window.pwned") is None  # and never run
            assert await page.locator("#transcript script, #transcript img").count() == 0
            timings = await page.inner_text("table.timings")
            assert "agent" in timings
            assert await page.get_attribute("#status a[href*='/pull/']", "href")
            await screenshot(page, tmp_path, "job.png")


async def test_mcp_tools_and_images_show_in_the_transcript(tmp_path: Path) -> None:
    async with served(tmp_path, dashboard_token=SecretStr(TOKEN)) as (url, store, settings), \
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        job = await add_job(store, settings, [
            {"kind": "spec", "text": "Fix it. [image 1: dialog]", "model": "m",
             "images": [{"path": "/x/image-1.png", "number": 1}]},
            {"kind": "mcp", "tools": ["mcp__facts__lookup"],
             "left_out": [f"MCP tool `{INJECTED}` of `facts`: its name does not fit"]}])
        page = (await http.get(f"/jobs/{job}")).text
        assert "Spec given to m with 1 image</summary>" in page
        assert "MCP tools <span class=\"meta\">1 beside the agent's own</span>" in page
        assert "mcp__facts__lookup\nleft out: MCP tool `&lt;script&gt;" in page
