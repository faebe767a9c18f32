"""The simulator's review comments, replies, reactions, mergeability and check runs' pull
requests, as Handoff's client calls them, checked against GitHub's OpenAPI description; and
the webhooks it sends for them, decoded as the receiver decodes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sim import app_client, simulator

from bot.github.client import RepoClient
from devkit.simulator import Simulator
from devkit.simulator.git import git
from handlers.payload import parse, shape_problem

REPO = "octo/widgets"
BRANCH = "agent/issue-1-greet"


@pytest.fixture
async def gh(sim: Simulator) -> AsyncIterator[RepoClient]:
    app = app_client(sim)
    yield app.repo(next(iter(sim.world.installations)), REPO)
    await app.close()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with simulator(tmp_path / "sim") as s:
        s.add_repo(REPO, {"app.py": "def greet():\n    return 'hi'\n\n\nprint(greet())\n"})
        git("branch", BRANCH, "main", cwd=s.get_repo(REPO).path)
        s.push(REPO, BRANCH, {"app.py": "def greet():\n    return 'hello'\n\n\nprint(greet())\n"},
               "Greet properly", "octo")
        yield s


async def test_review_threads_replies_reactions_and_mergeability(sim: Simulator,
                                                                 gh: RepoClient) -> None:
    pull = await gh.create_pull(title="Greet", head=BRANCH, base="main", body="b")
    number = int(pull["number"])
    assert (await gh.get_pull(number))["mergeable_state"] == "clean"
    first = sim.review_comment(REPO, number, "Say hello to whom?", "octo", path="app.py",
                               line=2)
    reply = sim.review_comment(REPO, number, "@handoff use the name", "octo",
                               reply_to=first.id)
    [thread, answer] = await gh.review_comments(number)
    assert thread["diff_hunk"].endswith("+    return 'hello'") and thread["line"] == 2
    assert answer["in_reply_to_id"] == first.id and answer["path"] == "app.py"
    await gh.react_review_comment(reply.id)
    await gh.reply_review_comment(number, first.id, "Done in abc1234.")
    assert reply.reactions == [("handoff[bot]", "eyes")]
    assert [c.in_reply_to for c in sim.get_repo(REPO).issues[number].pull.review_comments
            ] == [None, first.id, first.id]  # type: ignore[union-attr]
    # main changes the same line: the PR conflicts.
    sim.push(REPO, "main", {"app.py": "def greet():\n    return 'hey'\n\n\nprint(greet())\n"},
             "Hey", "octo")
    got = await gh.get_pull(number)
    assert got["mergeable"] is False and got["mergeable_state"] == "dirty"
    check = await gh.create_check_run(name="Handoff", head_sha=pull["head"]["sha"],
                                      status="in_progress", external_id="7")
    assert [p["number"] for p in check["pull_requests"]] == [number]
    calls = [c for c in sim.world.calls if c.get("operation")]
    assert {"pulls/create-reply-for-review-comment", "pulls/list-review-comments",
            "reactions/create-for-pull-request-review-comment", "pulls/get",
            "checks/create"} <= {c["operation"] for c in calls}
    bad = [(c["operation"], c["response_errors"]) for c in calls if c.get("response_errors")]
    assert bad == [], bad


async def test_the_webhooks_for_review_comments_and_reruns(sim: Simulator,
                                                            gh: RepoClient) -> None:
    pull = await gh.create_pull(title="Greet", head=BRANCH, base="main", body="b")
    first = sim.review_comment(REPO, int(pull["number"]), "Hm", "octo", path="app.py", line=2)
    check = await gh.create_check_run(name="Handoff", head_sha=pull["head"]["sha"],
                                      status="completed", conclusion="success")
    sim.rerun_check(REPO, int(check["id"]), "octo")
    sent = [(d.event, d.action, orjson.loads(d.payload)) for d in sim.world.deliveries]
    assert [(e, a) for e, a, _ in sent][-3:] == [
        ("pull_request_review_comment", "created"), ("pull_request_review", "submitted"),
        ("check_run", "rerequested")]
    comment = parse(orjson.dumps(sent[-3][2]))
    assert comment["comment"]["id"] == first.id and shape_problem(comment) == ""
    rerun = parse(orjson.dumps(sent[-1][2]))
    assert rerun["check_run"]["app"]["slug"] == "handoff" and shape_problem(rerun) == ""
    assert rerun["check_run"]["pull_requests"][0]["number"] == pull["number"]
