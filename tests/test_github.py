"""Handoff's GitHub layer against the simulator: auth, calls, real git, faults, webhooks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from sim import app_client, simulator

from bot.executor.gitops import GitError, git, unreachable
from bot.github.client import GitHubApiError, GitHubApp
from devkit.simulator import Fault, Simulator

REPO = "octo/widgets"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with simulator(tmp_path / "sim") as s:
        s.add_repo(REPO, {"README.md": "# widgets\n", "app.py": "print('hi')\n"})
        s.add_repo("octo/other", {"README.md": "other\n"})
        s.open_issue(REPO, "Fix the greeting", "It should say hello.", "alice")
        yield s


def validated(sim: Simulator) -> list[dict]:  # type: ignore[type-arg]
    """Every call the simulator matched to the OpenAPI subset, with its response check."""
    return [c for c in sim.world.calls if c.get("operation")]


async def test_client_calls_validate_against_openapi(sim: Simulator) -> None:
    app = app_client(sim)
    gh = app.repo(next(iter(sim.world.installations)), REPO)
    issue = await gh.get_issue(1)
    assert issue["title"] == "Fix the greeting"
    comment = await gh.create_comment(1, "Working on it")
    await gh.update_comment(comment["id"], "Still working")
    await gh.react_issue(1)
    await gh.react_comment(comment["id"])
    assert await gh.permission("octo") == "admin"
    assert await gh.permission("stranger") == "none"
    repo = await gh.get_repo()
    token = await gh.token()
    # A PR needs a commit on its head branch: push one with real git.
    work = sim.world.root.parent / "work"
    await git("clone", "-q", repo["clone_url"], str(work), token=token)
    (work / "app.py").write_text("print('hello')\n")
    await git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qam", "greet", cwd=work)
    await git("push", "-q", "origin", "HEAD:refs/heads/agent/issue-1-fix", cwd=work,
              token=token)
    pull = await gh.create_pull(title="Fix", head="agent/issue-1-fix", base="main",
                                body="Closes #1")
    files = await gh.request("GET", f"/pulls/{pull['number']}/files")
    assert [f["filename"] for f in files] == ["app.py"]
    run = await gh.create_check_run(name="handoff", head_sha=pull["head"]["sha"],
                                    status="in_progress")
    await gh.update_check_run(run["id"], conclusion="success",
                              output={"title": "done", "summary": "ok"})
    assert sim.get_repo(REPO).check_runs[run["id"]].conclusion == "success"
    calls = validated(sim)
    ops = {c["operation"] for c in calls}
    # The head branch comes from git's push, not the REST API (Handoff creates no refs).
    assert {"apps/create-installation-access-token", "issues/get", "issues/create-comment",
            "issues/update-comment", "reactions/create-for-issue",
            "reactions/create-for-issue-comment", "repos/get",
            "repos/get-collaborator-permission-level", "pulls/create", "checks/create",
            "checks/update", "pulls/list-files"} <= ops
    bad = [(c["operation"], c["response_errors"]) for c in calls if c.get("response_errors")]
    assert bad == [], bad


async def test_invalid_request_body_is_422(sim: Simulator) -> None:
    gh = app_client(sim).repo(next(iter(sim.world.installations)), REPO)
    with pytest.raises(GitHubApiError) as err:
        await gh.request("POST", "/issues/1/comments", json={"text": "no body field"})
    assert err.value.status == 422
    assert sum(1 for c in sim.world.calls if c["path"].endswith("/comments")) == 1  # no retry


async def test_jwt_rules(sim: Simulator) -> None:
    now = int(time.time())
    async with httpx.AsyncClient(base_url=sim.base_url) as c:
        def bearer(claims: dict) -> dict:  # type: ignore[type-arg]
            return {"authorization": "Bearer " + jwt.encode(claims, sim.private_key, "RS256")}
        ok = await c.get("/app", headers=bearer({"iat": now - 60, "exp": now + 540,
                                                 "iss": str(sim.world.app_id)}))
        assert ok.status_code == 200 and ok.json()["id"] == sim.world.app_id
        too_long = await c.get("/app", headers=bearer({"iat": now, "exp": now + 900,
                                                       "iss": str(sim.world.app_id)}))
        assert too_long.status_code == 401
        from devkit.simulator import generate_private_key
        other = jwt.encode({"iat": now, "exp": now + 60, "iss": "1"}, generate_private_key(),
                           "RS256")
        forged = await c.get("/app", headers={"authorization": f"Bearer {other}"})
        assert forged.status_code == 401


async def test_token_scoped_to_one_repository(sim: Simulator) -> None:
    app = app_client(sim)
    inst = next(iter(sim.world.installations))
    gh = app.repo(inst, REPO)
    token = await gh.token()
    async with httpx.AsyncClient(base_url=sim.base_url,
                                 headers={"authorization": f"token {token}"}) as c:
        assert (await c.get(f"/repos/{REPO}")).status_code == 200
        assert (await c.get("/repos/octo/other")).status_code == 404


async def test_git_clone_push_and_refusals(sim: Simulator, tmp_path: Path) -> None:
    app = app_client(sim)
    gh = app.repo(next(iter(sim.world.installations)), REPO)
    token = await gh.token()
    url = f"{sim.base_url}/{REPO}.git"
    with pytest.raises(GitError, match="401|Authentication|could not read"):
        await git("clone", "-q", url, str(tmp_path / "anon"))
    with pytest.raises(GitError):
        await git("clone", "-q", url, str(tmp_path / "bad"), token="ghs_wrong")
    work = tmp_path / "w"
    await git("clone", "-q", url, str(work), token=token)
    assert (work / "app.py").exists()
    (work / ".github/workflows").mkdir(parents=True)
    (work / ".github/workflows/ci.yml").write_text("on: push\n")
    await git("-c", "user.name=a", "-c", "user.email=a@b", "add", "-A", cwd=work)
    await git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "ci", cwd=work)
    with pytest.raises(GitError, match="without `workflows` permission"):
        await git("push", "-q", "origin", "HEAD:refs/heads/agent/wf", cwd=work, token=token)
    sim.expire_tokens()
    with pytest.raises(GitError):
        await git("fetch", "-q", "origin", cwd=work, token=token)


async def test_token_never_in_argv_or_repo(sim: Simulator, tmp_path: Path) -> None:
    token = await app_client(sim).repo(next(iter(sim.world.installations)), REPO).token()
    work = tmp_path / "w"
    await git("clone", "-q", f"{sim.base_url}/{REPO}.git", str(work), token=token)
    for path in work.joinpath(".git").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


async def test_expired_token_is_reminted(sim: Simulator) -> None:
    gh = app_client(sim).repo(next(iter(sim.world.installations)), REPO)
    first = await gh.token()
    sim.expire_tokens()
    assert (await gh.get_issue(1))["number"] == 1
    assert await gh.token() != first


@pytest.mark.parametrize("fault", [
    Fault("5xx", 2), Fault("secondary", 1, retry_after=1), Fault("429", 2, retry_after=0),
    Fault("primary", 1, reset_in=2), Fault("slow", 1, delay=6)])
async def test_faults_are_retried_within_bound(sim: Simulator, fault: Fault) -> None:
    gh = app_client(sim).repo(next(iter(sim.world.installations)), REPO)
    await gh.token()
    sim.add_fault(fault)
    started = time.monotonic()
    assert (await gh.get_issue(1))["number"] == 1
    if fault.kind in ("secondary", "primary"):
        assert time.monotonic() - started >= 0.9  # honoured the wait GitHub asked for


async def test_persistent_5xx_gives_clear_error(sim: Simulator) -> None:
    gh = app_client(sim).repo(next(iter(sim.world.installations)), REPO)
    await gh.token()
    sim.add_fault(Fault("5xx", 10, status=503))
    with pytest.raises(GitHubApiError, match="GitHub answered 503 Server Error"):
        await gh.get_issue(1)


async def test_github_away_is_said_apart_from_a_refusal(sim: Simulator,
                                                        tmp_path: Path) -> None:
    """GitHub refusing connections (the simulator's outage: its port closed), then back on
    the same port with its state: the calls in between fail as unavailable, never as a
    refusal of the request; git cannot reach it either; afterwards both work again."""
    gh = app_client(sim, attempts=2).repo(next(iter(sim.world.installations)), REPO)
    await gh.get_issue(1)  # a kept-alive connection, closed by the outage too
    assert sim.go_dark is not None
    sim.go_dark(1.5)
    await asyncio.sleep(0.3)
    with pytest.raises(GitHubApiError) as away:
        await gh.get_issue(1)
    assert away.value.unavailable and away.value.status is None, away.value
    with pytest.raises(GitError) as unreached:
        await git("ls-remote", f"{sim.base_url}/{REPO}.git", token=await gh.token())
    assert unreachable(unreached.value), unreached.value
    await asyncio.sleep(1.5)
    assert (await gh.get_issue(1))["number"] == 1
    with pytest.raises(GitHubApiError) as refused:
        await gh.get_issue(999)
    assert refused.value.status == 404 and not refused.value.unavailable
    sim.add_fault(Fault("5xx", 10, status=503))
    with pytest.raises(GitHubApiError) as failing:
        await gh.get_issue(1)
    assert failing.value.unavailable and failing.value.status == 503


async def test_rate_limit_longer_than_bound_is_clear_error(sim: Simulator) -> None:
    gh = app_client(sim).repo(next(iter(sim.world.installations)), REPO)
    await gh.token()
    sim.add_fault(Fault("primary", 1, reset_in=2400))
    started = time.monotonic()
    with pytest.raises(GitHubApiError, match="API rate limit exceeded.*asked to wait"):
        await gh.get_issue(1)
    assert time.monotonic() - started < 5  # no worker held sleeping


async def test_writes_are_paced(sim: Simulator) -> None:
    app = app_client(sim)
    app.pacer.interval = 0.3
    gh = app.repo(next(iter(sim.world.installations)), REPO)
    await gh.token()
    for i in range(4):
        await gh.create_comment(1, f"note {i}")
    times = [c["at"] for c in sim.world.calls if c["operation"] == "issues/create-comment"]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Unpaced, these would land milliseconds apart; arrival times jitter a little on a busy
    # machine, so the span is what is held to the interval.
    assert len(gaps) == 3 and min(gaps) >= 0.2 and times[-1] - times[0] >= 0.85


async def test_enterprise_base_url(sim: Simulator) -> None:
    async with GitHubApp(str(sim.world.app_id), sim.private_key,
                         sim.base_url + "/api/v3") as app:
        gh = app.repo(next(iter(sim.world.installations)), REPO)
        assert (await gh.get_issue(1))["title"] == "Fix the greeting"


async def test_webhook_to_receiver_and_redelivery(tmp_path: Path) -> None:
    from helpers import SECRET

    from bot.jobs.store import Store
    from bot.receiver.web import create_app
    from bot.server import running
    from handlers import Context

    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    async with running(create_app(store, SECRET, Context())) as handoff_url, \
            simulator(tmp_path / "sim", f"{handoff_url}/webhook", SECRET.decode()) as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        issue = sim.open_issue(REPO, "Add a flag", "", "octo")
        sim.label_issue(REPO, issue.number, "agent", "octo")
        await sim.settle()
        assert [d.status for d in sim.world.deliveries] == ["OK", "OK"]
        jobs = await store.list_jobs()
        assert len(jobs) == 1 and jobs[0].issue_number == issue.number
        app = app_client(sim)
        deliveries = await app.app_request("GET", "/app/hook/deliveries")
        labeled = next(d for d in deliveries if d["action"] == "labeled")
        await app.app_request("POST", f"/app/hook/deliveries/{labeled['id']}/attempts")
        assert sim.world.deliveries[-1].attempts[-1]["status"] == "OK"
        assert len(await store.list_jobs()) == 1
        record = await store.delivery(sim.world.deliveries[-1].guid)
        assert record and record["job_id"] == jobs[0].id
        payload = json.loads(sim.world.deliveries[-1].payload)
        real = json.loads((Path(__file__).parent / "fixtures/github-webhooks/issues/labeled.json"
                           ).read_text())
        assert set(real) <= set(payload)
    await store.close()


async def test_deliveries_missed_while_down_are_redelivered_once(tmp_path: Path) -> None:
    from helpers import SECRET, unused_port

    from bot.jobs.store import Store
    from bot.receiver.redelivery import sweep
    from bot.receiver.web import create_app
    from bot.server import running
    from handlers import Context

    down = unused_port()  # Handoff is down
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    async with simulator(tmp_path / "sim", f"http://127.0.0.1:{down}/webhook",
                         SECRET.decode()) as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        issue = sim.open_issue(REPO, "Add a flag", "", "octo")
        sim.label_issue(REPO, issue.number, "agent", "octo")
        await sim.settle()
        assert all(d.status.startswith("failed") for d in sim.world.deliveries)
        app = app_client(sim)
        async with running(create_app(store, SECRET, Context())) as url:
            sim.webhook_url = f"{url}/webhook"
            asked = await sweep(app, store)
            assert sorted(asked) == sorted(d.guid for d in sim.world.deliveries)
            jobs = await store.list_jobs()
            assert len(jobs) == 1 and jobs[0].issue_number == issue.number
            assert await sweep(app, store) == []  # every GUID now has an OK attempt
    await store.close()


def test_simulator_serves_every_operation_of_the_subset(tmp_path: Path) -> None:
    from starlette.routing import Route

    sim = Simulator(tmp_path)
    paths = {(m, r.path) for r in sim.app.routes if isinstance(r, Route)
             for m in (r.methods or ())}
    for _, op in sim.spec.routes:
        template = op.template
        for name in ("installation_id", "check_run_id", "comment_id"):
            template = template.replace("{" + name + "}", "{id:int}" if name != "installation_id"
                                        else "{id}")
        for name in ("issue_number", "pull_number"):
            template = template.replace("{" + name + "}", "{number:int}")
        template = template.replace("{branch}", "{branch:path}").replace(
            "{ref}", "{ref:path}").replace("{path}", "{path:path}")
        assert (op.method, template) in paths, (op.method, op.template)
