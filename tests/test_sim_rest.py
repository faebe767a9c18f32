"""The simulator's REST endpoints answer as GitHub does beyond Handoff's everyday calls: the
refusals (an unknown installation, branch, ref, file, comment, label, check run or delivery; a
body too long; a pull request with no head, no commits or one already open), the ref, label
and reply endpoints, and paging with odd parameters. Every answer the OpenAPI subset
describes is checked against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sim import app_client, simulator

from bot.github.client import GitHubApiError
from devkit.simulator import Simulator
from devkit.simulator import git as simgit

REPO = "octo/widgets"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with simulator(tmp_path / "sim") as s:
        s.add_repo(REPO, {"README.md": "# widgets\n", "app.py": "print('hi')\n"})
        s.open_issue(REPO, "Fix the greeting", "It should say hello.", "alice")
        simgit.git("branch", "agent/fix", "main", cwd=s.get_repo(REPO).path)
        s.push(REPO, "agent/fix", {"app.py": "print('hello')\n"}, "greet", "bot")
        yield s
        bad = [(c["operation"], c["response_errors"]) for c in s.world.calls
               if c.get("response_errors")]
        assert bad == [], bad


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    """A client with an installation token for the repository, as a person's script has."""
    token = await app_client(sim).repo(next(iter(sim.world.installations)), REPO).token()
    async with httpx.AsyncClient(base_url=f"{sim.base_url}/repos/{REPO}",
                                 headers={"Authorization": f"token {token}"}) as client:
        yield client


def refused(answer: httpx.Response, status: int, message: str = "") -> bool:
    """``answer`` is GitHub's refusal: that status, a message saying it, a docs link."""
    body = answer.json()
    return (answer.status_code == status and message in str(body)
            and "documentation_url" in body)


async def test_app_endpoints_know_only_their_installations(sim: Simulator) -> None:
    app = app_client(sim)
    installation = next(iter(sim.world.installations))
    assert (await app.app_request("GET", f"/app/installations/{installation}"))["id"] == \
        installation
    assert (await app.app_request("GET", f"/repos/{REPO}/installation"))["id"] == installation
    for method, url in [("GET", "/app/installations/999999"),
                        ("POST", "/app/installations/999999/access_tokens"),
                        ("POST", "/app/hook/deliveries/999999/attempts")]:
        with pytest.raises(GitHubApiError) as error:
            await app.app_request(method, url)
        assert error.value.status == 404, url


async def test_branches_refs_and_files_that_are_not_there_are_404(
        sim: Simulator, api: httpx.AsyncClient) -> None:
    ref = (await api.get("/git/ref/heads/agent/fix")).json()
    assert ref["ref"] == "refs/heads/agent/fix"
    assert ref["object"]["sha"] == (await api.get("/branches/agent/fix")).json()["commit"]["sha"]
    assert refused(await api.get("/branches/nope"), 404, "Branch not found")
    assert refused(await api.get("/git/ref/heads/nope"), 404)
    assert refused(await api.get("/contents/nope.txt"), 404)
    assert refused(await api.get("/contents/app.py", params={"ref": "nope"}), 404)


async def test_a_branch_is_made_from_a_commit_once(sim: Simulator,
                                                  api: httpx.AsyncClient) -> None:
    sha = (await api.get("/git/ref/heads/main")).json()["object"]["sha"]
    made = await api.post("/git/refs", json={"ref": "refs/heads/release", "sha": sha})
    assert made.status_code == 201 and made.json()["object"]["sha"] == sha
    assert (await api.get("/branches/release")).json()["commit"]["sha"] == sha
    assert refused(await api.post("/git/refs", json={"ref": "refs/heads/release", "sha": sha}),
                   422, "Reference already exists")
    assert refused(await api.post("/git/refs", json={"ref": "release2", "sha": sha}), 422,
                   "must start with 'refs/'")
    assert refused(await api.post("/git/refs", json={"ref": "refs/heads/r3", "sha": "f" * 40}),
                   422, "Object does not exist")


async def test_a_comment_over_65536_characters_is_refused_and_unknown_ones_are_404(
        sim: Simulator, api: httpx.AsyncClient) -> None:
    long = "x" * 65537
    assert refused(await api.post("/issues/1/comments", json={"body": long}), 422,
                   "body is too long (maximum is 65536 characters)")
    made = (await api.post("/issues/1/comments", json={"body": "short"})).json()
    assert refused(await api.patch(f"/issues/comments/{made['id']}", json={"body": long}), 422,
                   "body is too long")
    assert refused(await api.patch("/issues/comments/999999", json={"body": "x"}), 404)
    assert refused(await api.get("/issues/999/comments"), 404)
    assert [c.body for c in sim.get_repo(REPO).issues[1].comments] == ["short"]


async def test_labels_are_added_once_removed_and_cleared(sim: Simulator,
                                                         api: httpx.AsyncClient) -> None:
    added = await api.post("/issues/1/labels", json={"labels": ["bug", "agent", "bug"]})
    assert [label["name"] for label in added.json()] == ["bug", "agent"]
    assert [label["name"] for label in (await api.post("/issues/1/labels",
                                                       json=["docs"])).json()] == \
        ["bug", "agent", "docs"]
    left = await api.delete("/issues/1/labels/bug")
    assert [label["name"] for label in left.json()] == ["agent", "docs"]
    assert refused(await api.delete("/issues/1/labels/bug"), 404, "Label does not exist")
    assert (await api.delete("/issues/1/labels")).status_code == 204
    assert sim.get_repo(REPO).issues[1].labels == []


async def test_a_pull_request_needs_a_head_with_new_commits_and_only_one_open(
        sim: Simulator, api: httpx.AsyncClient) -> None:
    def pull(head: str) -> dict[str, Any]:
        return {"title": "Fix", "head": head, "base": "main", "body": "Closes #1"}

    assert refused(await api.post("/pulls", json=pull("nope")), 422, "invalid")
    assert refused(await api.post("/pulls", json=pull("main")), 422,
                   "No commits between main and main")
    made = await api.post("/pulls", json=pull("octo:agent/fix"))
    assert made.status_code == 201
    assert refused(await api.post("/pulls", json=pull("agent/fix")), 422,
                   "A pull request already exists for octo:agent/fix.")
    found = (await api.get("/pulls", params={"head": "octo:agent/fix"})).json()
    assert [p["number"] for p in found] == [made.json()["number"]]
    assert (await api.get("/pulls", params={"head": "octo:other"})).json() == []
    assert refused(await api.get("/pulls/1"), 404)  # an issue, not a pull request


async def test_review_comment_replies_and_reactions(sim: Simulator,
                                                    api: httpx.AsyncClient) -> None:
    number = (await api.post("/pulls", json={"title": "Fix", "head": "agent/fix",
                                             "base": "main"})).json()["number"]
    parent = sim.review_comment(REPO, number, "Why print?", "alice", "app.py", 1)
    reply = await api.post(f"/pulls/{number}/comments/{parent.id}/replies",
                           json={"body": "It greets."})
    assert reply.status_code == 201 and reply.json()["in_reply_to_id"] == parent.id
    assert refused(await api.post(f"/pulls/{number}/comments/999999/replies",
                                  json={"body": "x"}), 404)
    assert refused(await api.post(f"/pulls/{number}/comments/{parent.id}/replies",
                                  json={"body": ""}), 422)
    first = await api.post(f"/pulls/comments/{parent.id}/reactions", json={"content": "eyes"})
    again = await api.post(f"/pulls/comments/{parent.id}/reactions", json={"content": "eyes"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert parent.reactions == [(f"{sim.world.app_slug}[bot]", "eyes")]
    assert refused(await api.post("/pulls/comments/999999/reactions",
                                  json={"content": "eyes"}), 404)


async def test_a_check_run_keeps_its_output_unless_given_one(sim: Simulator,
                                                             api: httpx.AsyncClient) -> None:
    sha = (await api.get("/branches/main")).json()["commit"]["sha"]
    run = (await api.post("/check-runs", json={
        "name": "handoff", "head_sha": sha, "status": "in_progress",
        "output": {"title": "working", "summary": "started"}})).json()
    done = await api.patch(f"/check-runs/{run['id']}", json={"conclusion": "success"})
    assert done.json()["status"] == "completed"
    assert done.json()["output"]["title"] == "working"
    assert refused(await api.patch("/check-runs/999999", json={"conclusion": "success"}), 404)


async def test_odd_paging_parameters_are_read_as_github_reads_them(
        sim: Simulator, api: httpx.AsyncClient) -> None:
    for n in range(3):
        sim.comment(REPO, 1, f"comment {n}", "alice")
    got = await api.get("/issues/1/comments", params={"per_page": "many", "page": "first"})
    assert [c["body"] for c in got.json()] == ["comment 0", "comment 1", "comment 2"]
    assert "link" not in got.headers  # 30 a page: one page
    two = await api.get("/issues/1/comments", params={"per_page": 2, "page": "x"})
    assert len(two.json()) == 2 and 'page=2>; rel="next"' in two.headers["link"]


async def test_failed_deliveries_are_listed_apart(tmp_path: Path) -> None:
    """A receiver that takes issue events and fails comment events: ``status=failure``
    lists the comment's delivery alone."""

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
        length = int(head.split("content-length: ", 1)[1].split("\r\n", 1)[0])
        await reader.readexactly(length)
        status = "200 OK" if "x-github-event: issues\r\n" in head else "500 Oops"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        writer.close()

    receiver = await asyncio.start_server(receive, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{receiver.sockets[0].getsockname()[1]}/"
    try:
        async with simulator(tmp_path / "sim", webhook_url=url, secret="s") as sim:
            sim.add_repo(REPO, {"README.md": "x\n"})
            sim.open_issue(REPO, "One", "", "alice")
            sim.comment(REPO, 1, "hello", "alice")
            await sim.settle()
            app = app_client(sim)
            failed = await app.app_request("GET", "/app/hook/deliveries",
                                           params={"status": "failure"})
            every = await app.app_request("GET", "/app/hook/deliveries")
    finally:
        receiver.close()
        await receiver.wait_closed()
    assert [(d["event"], d["status"]) for d in every] == [("issue_comment", "500"),
                                                          ("issues", "OK")]
    assert [(d["event"], d["status_code"]) for d in failed] == [("issue_comment", 500)]
