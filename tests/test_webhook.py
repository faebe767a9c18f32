"""The webhook receiver over real HTTP: signatures, bad input, durability and idempotency."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from helpers import SECRET, WEBHOOKS, comment, headers, labeled, sign

from bot.jobs.store import Store
from bot.receiver.web import create_app, signature_ok
from bot.server import running
from handlers import Context


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(store, SECRET, Context(), max_body=1024 * 1024)
    async with running(app) as url, httpx.AsyncClient(base_url=url) as c:
        yield c


async def post(client: httpx.AsyncClient, event: str, data: object,
               delivery: str | None = None) -> httpx.Response:
    body = json.dumps(data).encode()
    return await client.post("/webhook", content=body, headers=headers(event, body, delivery))


def test_githubs_signature_vector() -> None:
    vector = json.loads((WEBHOOKS / "signature-test-vector.json").read_text())
    assert signature_ok(vector["secret"].encode(), vector["payload"].encode(),
                        vector["signature_256"])
    assert not signature_ok(b"other", vector["payload"].encode(), vector["signature_256"])


async def test_label_creates_one_durable_job(client: httpx.AsyncClient, store: Store) -> None:
    resp = await post(client, "issues", labeled(), delivery="d-1")
    assert resp.status_code == 202
    job_id = resp.json()["job"]
    job = await store.get_job(job_id)
    assert job and job.state == "queued" and job.issue_number == 1 and job.delivery_id == "d-1"
    delivery = await store.delivery("d-1")
    assert delivery and delivery["job_id"] == job_id


async def test_every_fixture_is_accepted(client: httpx.AsyncClient) -> None:
    for path in sorted(WEBHOOKS.glob("*/*.json")):
        if path.parent.name == "github-webhooks":
            continue
        body = path.read_bytes()
        resp = await client.post("/webhook", content=body, headers=headers(path.parent.name, body))
        assert resp.status_code == 202, (path, resp.text)


async def test_same_delivery_twice_acts_once(client: httpx.AsyncClient, store: Store) -> None:
    first = await post(client, "issues", labeled(), delivery="same")
    second = await post(client, "issues", labeled(), delivery="same")
    assert first.status_code == 202 and second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert len(await store.list_jobs()) == 1


async def test_second_trigger_recorded_not_run(client: httpx.AsyncClient, store: Store) -> None:
    await post(client, "issues", labeled())
    resp = await post(client, "issue_comment", comment("/agent"))
    assert resp.status_code == 202 and resp.json()["job"] is None
    assert "already has job" in resp.json()["detail"]
    assert len(await store.list_jobs()) == 1


@pytest.mark.parametrize("mangle", ["wrong", "missing", "sha1", "other-secret"])
async def test_bad_signature_is_401(client: httpx.AsyncClient, store: Store, mangle: str) -> None:
    body = json.dumps(labeled()).encode()
    h = headers("issues", body)
    if mangle == "wrong":
        h["x-hub-signature-256"] = sign(body + b" ")
    elif mangle == "missing":
        del h["x-hub-signature-256"]
    elif mangle == "sha1":
        del h["x-hub-signature-256"]
        h["x-hub-signature"] = "sha1=" + "0" * 40
    else:
        h = headers("issues", body, secret=b"not-the-secret")
    resp = await client.post("/webhook", content=body, headers=h)
    assert resp.status_code == 401
    assert await store.list_jobs() == [] and await store.count_deliveries() == 0


async def test_signature_over_reserialized_json_is_401(client: httpx.AsyncClient) -> None:
    data = labeled()
    body = json.dumps(data, indent=2).encode()
    h = headers("issues", json.dumps(data).encode())
    assert (await client.post("/webhook", content=body, headers=h)).status_code == 401


@pytest.mark.parametrize("header", ["x-github-event", "x-github-delivery"])
async def test_missing_header_is_400(client: httpx.AsyncClient, header: str) -> None:
    body = json.dumps(labeled()).encode()
    h = headers("issues", body)
    del h[header]
    assert (await client.post("/webhook", content=body, headers=h)).status_code == 400


async def test_malformed_json_is_400(client: httpx.AsyncClient, store: Store) -> None:
    body = b'{"action": "labeled", '
    h = headers("issues", body)
    resp = await client.post("/webhook", content=body, headers=h)
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]
    recorded = await store.delivery(h["x-github-delivery"])  # signed: recorded, as refused
    assert recorded and recorded["outcome"].startswith("refused: body is not valid JSON")


async def test_json_that_is_not_an_object_is_400(client: httpx.AsyncClient,
                                                 store: Store) -> None:
    body = b'[{"action": "labeled"}]'
    resp = await client.post("/webhook", content=body, headers=headers("issues", body))
    assert resp.status_code == 400 and "JSON object" in resp.json()["error"]
    assert await store.count_deliveries() == 1


async def test_payload_of_an_unexpected_shape_is_recorded_and_ignored(
        client: httpx.AsyncClient, store: Store) -> None:
    data = labeled()
    data["issue"] = "not an object"
    body = json.dumps(data).encode()
    resp = await client.post("/webhook", content=body, headers=headers("issues", body))
    assert resp.status_code == 202 and "payload lacks" in resp.json()["detail"]
    assert await store.count_deliveries() == 1 and not await store.queued()


async def test_oversize_body_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    resp = await client.post("/webhook", content=body, headers=headers("issues", body))
    assert resp.status_code == 413


async def test_oversize_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"a" * 65536

    h = headers("issues", b"")
    resp = await client.post("/webhook", content=chunks(), headers=h)
    assert resp.status_code == 413


async def test_non_json_content_type_is_415(client: httpx.AsyncClient) -> None:
    body = b"payload=%7B%7D"
    h = headers("issues", body)
    h["content-type"] = "application/x-www-form-urlencoded"
    assert (await client.post("/webhook", content=body, headers=h)).status_code == 415


async def test_unknown_event_acknowledged(client: httpx.AsyncClient, store: Store) -> None:
    resp = await post(client, "star", {"action": "created"}, delivery="star-1")
    assert resp.status_code == 202 and resp.json()["job"] is None
    delivery = await store.delivery("star-1")
    assert delivery and delivery["outcome"].startswith("ignored")


async def test_bot_comment_creates_nothing(client: httpx.AsyncClient, store: Store) -> None:
    resp = await post(client, "issue_comment", comment("/agent", user_type="Bot"))
    assert resp.status_code == 202 and await store.list_jobs() == []


async def test_retry_on_foreign_pr_creates_nothing(client: httpx.AsyncClient,
                                                   store: Store) -> None:
    resp = await post(client, "issue_comment", comment("/retry please", on_pr=True, number=7))
    assert resp.status_code == 202
    assert "not an agent pull request" in resp.json()["detail"]
    assert await store.list_jobs() == []


async def test_unlabel_cancels_queued_job(client: httpx.AsyncClient, store: Store) -> None:
    job_id = (await post(client, "issues", labeled())).json()["job"]
    data = labeled()
    data["action"] = "unlabeled"
    resp = await post(client, "issues", data)
    assert resp.status_code == 202
    job = await store.get_job(job_id)
    assert job and job.state == "cancelled" and "label was removed" in job.reason


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200


async def test_installations_are_recorded(client: httpx.AsyncClient, store: Store) -> None:
    from helpers import payload

    created = payload("installation/created")
    assert (await post(client, "installation", created)).status_code == 202
    inst_id = created["installation"]["id"]
    record = await store.installation(inst_id)
    assert record and record["state"] == "active"
    assert set(record["repositories"]) == {r["full_name"] for r in created["repositories"]}
    removed = payload("installation_repositories/removed")
    removed["installation"]["id"] = inst_id
    await post(client, "installation_repositories", removed)
    record = await store.installation(inst_id)
    gone = {r["full_name"] for r in removed["repositories_removed"]}
    assert record and not gone & set(record["repositories"])


async def test_concurrent_deliveries_each_land_once(client: httpx.AsyncClient,
                                                    store: Store) -> None:
    # 60 at once: the receiver groups them into shared commits; each still gets its own answer.
    import asyncio

    def unique(n: int) -> dict[str, Any]:  # GitHub's bodies differ (times, ids): so do these
        body = labeled(number=n % 3 + 1)
        body["issue"]["updated_at"] = f"2026-01-01T00:00:{n:02d}Z"
        return body

    sends = [post(client, "issues", unique(n), delivery=f"c-{n}") for n in range(50)]
    sends += [post(client, "issues", unique(n), delivery=f"c-{n}") for n in range(10)]
    answers = await asyncio.gather(*sends)
    assert all(r.status_code in (200, 202) for r in answers)
    assert sum(r.status_code == 200 for r in answers) == 10  # the ten repeats
    assert await store.count_deliveries() == 50
    assert sorted(j.issue_number for j in await store.queued()) == [1, 2, 3]


async def test_a_delivery_the_database_refuses_fails_alone(client: httpx.AsyncClient,
                                                          store: Store) -> None:
    # A real refusal from SQLite for one delivery id; the ones sharing its batch still land.
    import asyncio

    import sqlalchemy as sa

    await store.write(lambda conn: conn.execute(sa.text(
        "CREATE TRIGGER refuse BEFORE INSERT ON deliveries WHEN NEW.id = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")))
    answers = await asyncio.gather(
        *(post(client, "issues", labeled("bug"), delivery=f"ok-{n}") for n in range(5)),
        post(client, "issues", labeled("bug"), delivery="poison"))
    assert [r.status_code for r in answers] == [202] * 5 + [500]
    assert await store.delivery("poison") is None and await store.count_deliveries() == 5


async def test_a_handler_bug_is_a_500_logged_with_the_delivery_id(
        client: httpx.AsyncClient, store: Store, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that fails on a payload it declares fine is Handoff's bug: GitHub sees a
    failed delivery (and the redelivery sweep asks for it again), the log names it."""
    import handlers
    from handlers.router import Router
    from handlers.vocabulary import Decision, Event

    broken = Router()

    @broken.register("issues", "labeled", reads={"issue.number": int})
    def crash(event: Event, ctx: Context) -> Decision:
        raise RuntimeError("a bug")

    monkeypatch.setattr(handlers, "ROUTERS", (broken, *handlers.ROUTERS))
    resp = await post(client, "issues", labeled(), delivery="bug-1")
    assert resp.status_code == 500
    assert "bug-1" in caplog.text and "issues.labeled handler failed" in caplog.text
    assert await store.delivery("bug-1") is None  # not taken as handled: it may come again
    # A payload without what the handler declares is not a bug: ignored, with the reason.
    odd = labeled()
    odd["issue"]["number"] = "seven"
    resp = await post(client, "issues", odd, delivery="odd-1")
    assert resp.status_code in (200, 202)  # acknowledged: recorded, nothing to do
    recorded = await store.delivery("odd-1")
    assert recorded and "issue.number (int)" in recorded["outcome"]
