"""👀 on a request within seconds: the worker reacts when it finds the requester may ask,
while the job still waits in the queue (before any runner takes it)."""

from __future__ import annotations

from pathlib import Path

from sim import app_client, simulator

from bot.jobs.chores import Chores
from bot.jobs.store import Store
from bot.reporter.conversation import Conversation
from devkit.simulator.git import git

REPO = "octo/widgets"
BRANCH = "agent/issue-1-greet"


async def test_a_writers_request_gets_its_eyes_before_the_job_runs(tmp_path: Path,
                                                                   store: Store) -> None:
    async with simulator(tmp_path / "sim") as sim:
        sim.add_repo(REPO, {"app.py": "print('hi')\n"})
        sim.get_repo(REPO).collaborators.update({"maya": "write", "outsider": "read"})
        git("branch", BRANCH, "main", cwd=sim.get_repo(REPO).path)
        sim.push(REPO, BRANCH, {"app.py": "print('hello')\n"}, "Greet", "maya")
        installation = sim.get_repo(REPO).installation_id
        app, other = app_client(sim), app_client(sim)
        gh = app.repo(installation, REPO)
        number = int((await gh.create_pull(title="G", head=BRANCH, base="main",
                                           body="b"))["number"])
        asks = {login: sim.review_comment(REPO, number, "@handoff say hello", login,
                                          path="app.py", line=1)
                for login in ("maya", "outsider")}
        jobs = {}
        for issue, login in enumerate(asks, start=1):
            jobs[login] = await store.write(lambda conn, issue=issue, login=login:
                                            store.insert_job(
                conn, kind="mention", repo=REPO, installation_id=installation,
                issue_number=issue, pr_number=number, requested_by=login,
                context={"review_comment_id": asks[login].id}))
        await Chores(store, Conversation(other)).review_arrivals()
        await app.close()
        await other.close()
        assert asks["maya"].reactions == [("handoff[bot]", "eyes")]
        assert asks["outsider"].reactions == []
        mine = await store.get_job(int(jobs["maya"] or 0))
        assert mine is not None and mine.state == "queued" and mine.result.acknowledged
        theirs = await store.get_job(int(jobs["outsider"] or 0))
        assert theirs is not None and theirs.state == "failed"
