"""Handlers decide from real GitHub payloads, with no I/O."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml
from helpers import WEBHOOKS, comment, labeled, payload

from handlers import Context, decide, routed_events
from handlers.payload import parse
from handlers.vocabulary import (
    CancelJob,
    Decision,
    Event,
    Ignore,
    Pong,
    RecordInstallation,
    StartJob,
)

CTX = Context(trigger_label="agent", bot_login="handoff[bot]")


def ev(name: str, data: dict) -> Event:  # type: ignore[type-arg]
    """The event as the webhook receiver hands it over: only the fields handlers read."""
    return Event(name=name, payload=parse(orjson.dumps(data)), delivery_id="d")


@pytest.mark.parametrize("path", sorted(WEBHOOKS.glob("*/*.json")), ids=lambda p: p.stem)
def test_every_fixture_gets_a_decision(path: Path) -> None:
    if path.name == "signature-test-vector.json" or path.name == "manifest.json":
        return
    data = orjson.loads(path.read_bytes())
    decision = decide(ev(path.parent.name, data), CTX)
    assert isinstance(decision, Decision)
    # The slim decode the receiver uses leads to the same decision as the whole payload.
    assert decision == decide(Event(name=path.parent.name, payload=data), CTX)


def test_trigger_label_starts_implementation() -> None:
    d = decide(ev("issues", labeled()), CTX)
    assert d == StartJob(kind="implement", repo="Codertocat/Hello-World", installation_id=42,
                         issue_number=1, requested_by="Codertocat", trigger="label",
                         context={"issue_snapshot": {
                             "title": "Spelling error in the README file",
                             "body": "It looks like you accidently spelled 'commit' with two "
                                     "'t's."}})


def test_other_label_is_ignored() -> None:
    d = decide(ev("issues", labeled("bug")), CTX)
    assert isinstance(d, Ignore) and "not the trigger label" in d.reason


def test_label_by_bot_is_ignored() -> None:
    data = labeled()
    data["sender"]["type"] = "Bot"
    assert isinstance(decide(ev("issues", data), CTX), Ignore)


def test_unlabel_cancels_queued_only() -> None:
    data = payload("issues/unlabeled")
    data["label"]["name"] = "agent"
    d = decide(ev("issues", data), CTX)
    assert isinstance(d, CancelJob) and d.only_queued and d.issue_number == data["issue"]["number"]


def test_agent_command_on_issue() -> None:
    d = decide(ev("issue_comment", comment("/agent please use the v2 API")), CTX)
    assert isinstance(d, StartJob) and d.kind == "implement"
    assert d.feedback == "please use the v2 API"


def test_retry_on_pr_carries_feedback() -> None:
    d = decide(ev("issue_comment", comment("/retry  handle the empty list\ntoo", on_pr=True)), CTX)
    assert isinstance(d, StartJob) and d.kind == "retry" and d.pr_number == 1
    assert d.feedback == "handle the empty list\ntoo"


def test_retry_on_issue_is_ignored() -> None:
    assert isinstance(decide(ev("issue_comment", comment("/retry")), CTX), Ignore)


def test_cancel_on_pr() -> None:
    d = decide(ev("issue_comment", comment("/cancel", on_pr=True)), CTX)
    assert isinstance(d, CancelJob) and d.pr_number == 1 and d.issue_number is None


@pytest.mark.parametrize("user_type,login", [("Bot", "someone"), ("User", "handoff[bot]"),
                                             ("User", "evil[bot]")])
def test_bot_comments_never_trigger(user_type: str, login: str) -> None:
    data = comment("/retry do it", on_pr=True, user_type=user_type)
    data["comment"]["user"]["login"] = login
    assert isinstance(decide(ev("issue_comment", data), CTX), Ignore)


def test_plain_comment_ignored() -> None:
    assert isinstance(decide(ev("issue_comment", payload("issue_comment/created")), CTX), Ignore)


def test_changes_requested_on_agent_pr() -> None:
    data = payload("pull_request_review/submitted")
    data["review"]["state"] = "changes_requested"
    data["pull_request"]["head"]["ref"] = "agent/issue-1-fix-it"
    d = decide(ev("pull_request_review", data), CTX)
    assert isinstance(d, StartJob) and d.kind == "review"
    assert d.pr_number == data["pull_request"]["number"]


def test_changes_requested_on_human_pr_ignored() -> None:
    data = payload("pull_request_review/submitted")
    data["review"]["state"] = "changes_requested"
    assert isinstance(decide(ev("pull_request_review", data), CTX), Ignore)


def test_approval_and_a_bare_comment_review_start_nothing() -> None:
    data = payload("pull_request_review/submitted")
    data["pull_request"]["head"]["ref"] = "agent/issue-1-x"
    data["review"]["state"] = "approved"
    assert isinstance(decide(ev("pull_request_review", data), CTX), Ignore)
    data["review"]["state"] = "commented"  # inline comments come as their own events
    assert isinstance(decide(ev("pull_request_review", data), CTX), Ignore)


def test_installation_recorded() -> None:
    d = decide(ev("installation", payload("installation/created")), CTX)
    assert isinstance(d, RecordInstallation) and d.action == "created"
    d = decide(ev("installation_repositories", payload("installation_repositories/removed")), CTX)
    assert isinstance(d, RecordInstallation) and d.repositories_removed


def test_ping_answered() -> None:
    assert isinstance(decide(ev("ping", payload("ping/payload")), CTX), Pong)


def test_unknown_event_ignored() -> None:
    assert isinstance(decide(ev("star", {"action": "created"}), CTX), Ignore)


def test_drifted_payload_is_ignored_not_raised() -> None:
    assert isinstance(decide(ev("issues", {"action": "labeled", "label": {"name": "agent"}}),
                             CTX), Ignore)


@pytest.mark.parametrize(("event", "source", "path", "value", "why"), [
    ("issues", "labeled", ("installation",), "agent", "$.installation"),
    ("issues", "labeled", ("installation",), {"id": "nope"}, "$.installation.id"),
    ("issues", "labeled", ("installation",), {"id": 2**64 + 7}, "$.installation.id"),
    ("issues", "labeled", ("sender",), [1, 2], "sender"),
    ("issues", "labeled", ("sender",), None, "sender.login"),
    ("issues", "labeled", ("repository",), {"full_name": 7}, "repository.full_name"),
    ("issues", "labeled", ("repository",), {"full_name": "a/b/c"}, "$.repository.full_name"),
    ("issue_comment", "created", ("comment", "id"), {"id": "nope"}, "$.comment.id"),
    ("issue_comment", "created", ("comment", "user"), "x", "comment.user.login"),
    ("installation_repositories", "added", ("repositories_added",), ["x"],
     "$.repositories_added[0]"),
    ("installation_repositories", "added", ("repositories_added",), [{"full_name": 7}],
     "$.repositories_added[0].full_name"),
    ("installation", "created", ("repositories",), {"full_name": "a/b"}, "$.repositories"),
])
def test_a_field_a_handler_reads_in_another_shape_is_ignored_with_where(
        event: str, source: str, path: tuple[str, ...], value: object, why: str) -> None:
    """Every field a handler or Event reads is declared: an odd value there is ignored with
    the reason (the field's path), never read as if it were GitHub's."""
    data = labeled() if source == "labeled" else comment("/agent") if event == \
        "issue_comment" else payload(f"{event}/{source}")
    data["installation"] = data.get("installation") or {"id": 42, "account": {"login": "a"}}
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    slim = parse(json.dumps(data).encode())  # json: orjson refuses integers past 64 bits
    for decoded in (Event(name=event, payload=slim), Event(name=event, payload=data)):
        decision = decide(decoded, CTX)
        assert isinstance(decision, Ignore) and "payload lacks" in decision.reason, decision
        assert why in decision.reason, decision.reason


def test_app_manifest_subscribes_to_every_routed_event() -> None:
    manifest = yaml.safe_load((Path(__file__).parent.parent / "app.yml").read_text())
    implicit = {"installation", "installation_repositories", "ping"}
    assert routed_events() - implicit <= set(manifest["default_events"])


def test_every_failure_category_tells_the_step_and_what_to_do() -> None:
    from bot.jobs.states import Failure
    from bot.reporter.report import STEPS

    missing = [f for f in Failure if f not in STEPS and f != Failure.CANCELLED]
    assert missing == []  # a new category needs its line in bot/reporter/report.py's STEPS
    # Each reads as the end of a sentence, "failed while ...": a doing, never a step's name.
    clauses = [step for step, _ in STEPS.values()]
    assert all(c.split()[0].endswith("ing") or c.startswith("the agent was ")
               for c in clauses), clauses


@pytest.mark.parametrize("path", sorted(WEBHOOKS.glob("*/*.json")), ids=lambda p: p.stem)
def test_the_slim_decode_keeps_every_field_a_handler_declares(path: Path) -> None:
    """Each handler declares what it reads beside itself; handlers/payload.py must keep it."""
    from handlers import ROUTERS
    from handlers.router import _lookup

    data = orjson.loads(path.read_bytes())
    if not isinstance(data, dict):
        return
    event = Event(name=path.parent.name, payload=data)
    routes = [r.find(event) for r in ROUTERS]
    route = next((r for r in routes if r is not None), None)
    if route is None:
        return
    slim = parse(orjson.dumps(data))
    for field in route.reads:
        assert _lookup(slim, field) == _lookup(data, field), field
