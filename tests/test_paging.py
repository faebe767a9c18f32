"""Lists page as GitHub pages them (30 by default, 100 at most, ``Link: rel="next"``), and
Handoff reads every page: comments, reviews and review comments past 30, and the App's
webhook deliveries past 100, whose cursor only the ``Link`` header names."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from helpers import SECRET
from sim import app_client, simulator

from bot.redelivery import sweep
from bot.serving import running
from bot.simulator import Simulator
from bot.simulator.state import Pull
from bot.store import Store
from bot.web import create_app
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
    with socket.socket() as sock:  # a port where nothing listens: Handoff is down
        sock.bind(("127.0.0.1", 0))
        down = sock.getsockname()[1]
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
