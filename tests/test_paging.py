"""Lists page as GitHub pages them (30 by default, 100 at most, ``Link: rel="next"``), and
Handoff reads every page: comments, reviews and review comments past 30, and the App's
webhook deliveries past 100, whose cursor only the ``Link`` header names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from helpers import SECRET, unused_port
from sim import app_client, simulator

from bot.jobs.store import Store
from bot.receiver.redelivery import sweep
from bot.receiver.web import create_app
from bot.server import running
from devkit.simulator import Simulator
from devkit.simulator.state import Pull
from handlers import Context

REPO = "octo/widgets"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with simulator(tmp_path / "sim") as s:
        s.add_repo(REPO, {"README.md": "# widgets\n"})
        yield s


async def test_simulator_pages_like_github(sim: Simulator) -> None:
    issue = sim.open_issue(REPO, "Busy issue", "", "alice")
    for n in range(75):
        sim.comment(REPO, issue.number, f"comment {n}", "alice")
    token = await app_client(sim).repo(next(iter(sim.world.installations)), REPO).token()
    url = f"{sim.base_url}/repos/{REPO}/issues/{issue.number}/comments"
    async with httpx.AsyncClient(headers={"authorization": f"token {token}"}) as client:
        first = await client.get(url)
        assert len(first.json()) == 30  # GitHub's default page
        assert first.links["next"]["url"].endswith("page=2")
        big = await client.get(url, params={"per_page": 500})
        assert len(big.json()) == 75 and "next" not in big.links  # at most 100; 75 fit
        last = await client.get(url, params={"per_page": 50, "page": 2})
        assert [c["body"] for c in last.json()][-1] == "comment 74"
        assert "next" not in last.links


async def test_every_comment_review_and_review_comment_arrives(sim: Simulator) -> None:
    repo = sim.get_repo(REPO)
    issue = sim.open_issue(REPO, "Long discussion", "", "alice")
    for n in range(130):
        sim.comment(REPO, issue.number, f"comment {n}", "alice")
    pr = sim.open_issue(REPO, "A pull request", "", "alice")
    repo.issues[pr.number].pull = Pull("feature", "main")
    for n in range(35):
        sim.review(REPO, pr.number, "COMMENTED", f"review {n}", "bob", comments=[
            {"body": f"note {n}", "path": "README.md", "line": 1}])
    sim.review(REPO, pr.number, "CHANGES_REQUESTED", "last", "bob", comments=[
        {"body": f"more {n}", "path": "README.md", "line": 1} for n in range(10)])
    gh = app_client(sim).repo(repo.installation_id, REPO)

    comments = await gh.list_comments(issue.number)
    reviews = await gh.reviews(pr.number)
    review_comments = await gh.review_comments(pr.number)

    assert [c["body"] for c in comments] == [f"comment {n}" for n in range(130)]
    assert [r["body"] for r in reviews] == [*(f"review {n}" for n in range(35)), "last"]
    assert len(review_comments) == 45
    assert {c["body"] for c in review_comments} >= {"note 0", "note 34", "more 9"}
    pages = [c for c in sim.world.calls if c["path"].endswith(f"/pulls/{pr.number}/comments")]
    assert len(pages) == 1  # 100 a page: 45 review comments in one call
    assert len([c for c in sim.world.calls
                if c["path"].endswith(f"/issues/{issue.number}/comments")]) == 2


async def test_redelivery_sweep_follows_the_deliveries_cursor(tmp_path: Path) -> None:
    down = unused_port()  # Handoff is down
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    async with simulator(tmp_path / "sim", f"http://127.0.0.1:{down}/webhook",
                         SECRET.decode()) as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        for n in range(230):  # three pages of deliveries at 100 a page
            sim.open_issue(REPO, f"issue {n}", "", "octo")
        await sim.settle()
        missed = {d.guid for d in sim.world.deliveries}
        assert len(missed) == 230
        app = app_client(sim)
        async with running(create_app(store, SECRET, Context())) as url:
            sim.webhook_url = f"{url}/webhook"
            asked = await sweep(app, store)
            assert set(asked) == missed  # the oldest, on the last page, too
            listed = [c for c in sim.world.calls if c["path"] == "/app/hook/deliveries"]
            assert len(listed) == 3
            assert all(d.status == "OK" for d in sim.world.deliveries)
            assert await sweep(app, store) == []  # every GUID now has an OK attempt
    await store.close()


async def test_redeliver_every_catches_what_a_forwarder_dropped(tmp_path: Path) -> None:
    """Local development through a forwarder: smee.io answers GitHub even when no client is
    connected, so GitHub records the delivery OK and Handoff never sees it. `handoff redeliver
    --every SECONDS --unrecorded` polls and asks again for what the store lacks."""
    import asyncio
    import os
    import signal
    import sys

    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def dropped(request: object) -> Response:
        return Response(status_code=200)  # the forwarder took it; nobody was listening

    forwarder = Starlette(routes=[Route("/webhook", dropped, methods=["POST"])])
    db = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    store = await Store.open(db)
    root = Path(__file__).parent.parent
    async with running(forwarder) as lost, simulator(tmp_path / "sim", f"{lost}/webhook",
                                                     SECRET.decode()) as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        issue = sim.open_issue(REPO, "Add a flag", "", "octo")
        sim.label_issue(REPO, issue.number, "agent", "octo")
        await sim.settle()
        assert all(d.status == "OK" for d in sim.world.deliveries)  # as GitHub sees it
        async with running(create_app(store, SECRET, Context())) as url:
            sim.webhook_url = f"{url}/webhook"  # the forwarder's client is connected again
            clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "redeliver", "--every", "0.5", "--unrecorded",
                cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env={**clean, "PYTHONPATH": str(root), "HANDOFF_APP_ID": str(sim.world.app_id),
                     "HANDOFF_PRIVATE_KEY": sim.private_key, "HANDOFF_GITHUB_URL": sim.base_url,
                     "HANDOFF_DATABASE_URL": db})
            try:
                for _ in range(100):
                    if await store.list_jobs():
                        break
                    await asyncio.sleep(0.2)
                jobs = await store.list_jobs()
                assert len(jobs) == 1 and jobs[0].issue_number == issue.number
                await asyncio.sleep(1.2)  # more sweeps: nothing is asked twice once recorded
            finally:
                proc.send_signal(signal.SIGINT)
                out = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
            assert proc.returncode == 0, out
            lines = [line for line in out.splitlines() if line.startswith("asked")]
            assert lines[0] == "asked GitHub to redeliver 2 missed deliveries", out
            assert len(lines) >= 2 and set(lines[1:]) == {
                "asked GitHub to redeliver 0 missed deliveries"}, out
    await store.close()
