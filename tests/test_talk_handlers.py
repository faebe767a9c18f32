"""@handoff anywhere, /rebase, reviews without a word list, and Re-run: decided from GitHub's
own example payloads, with no I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from helpers import comment, payload

from handlers import Context, decide
from handlers.mentions import mention_command, mentions
from handlers.payload import parse
from handlers.vocabulary import Event, Ignore, StartJob

CTX = Context(trigger_label="agent", bot_login="handoff[bot]")

# Praise people really write on pull requests: none of it asks for work.
PRAISE = [
    "LGTM, nice use of type hints.",
    "LGTM",
    "Looks good to me! Thanks for adding the tests.",
    "Nice work, this is much cleaner than what we had.",
    "Great job 🎉 Should have done this ages ago.",
    "Thanks! I like how you handled the empty list case.",
    "Clean change, easy to review. Ship it.",
    "Can't wait to use this, well done!",
    "Why didn't we do this before? Great fix.",
    "+1, the docs change is a nice touch.",
]


def ev(name: str, data: dict[str, Any]) -> Event:
    return Event(name=name, payload=parse(orjson.dumps(data)), delivery_id="d")


def review(state: str, body: str, ref: str = "agent/issue-1-x") -> dict[str, Any]:
    data = payload("pull_request_review/submitted")
    data["pull_request"]["head"]["ref"] = ref
    data["review"].update(state=state, body=body)
    return data


def review_comment(body: str, reply_to: int | None = None, login: str = "maya",
                   ref: str = "agent/issue-1-x") -> dict[str, Any]:
    data = payload("pull_request_review_comment/created")
    data["pull_request"]["head"]["ref"] = ref
    data["comment"].update(body=body, in_reply_to_id=reply_to)
    data["comment"]["user"].update(login=login, type="User")
    return data


@pytest.mark.parametrize("body", PRAISE)
def test_praise_in_a_comment_only_review_starts_nothing(body: str) -> None:
    assert isinstance(decide(ev("pull_request_review", review("commented", body)), CTX),
                      Ignore)


@pytest.mark.parametrize("body", PRAISE)
def test_praise_in_a_reply_or_a_pr_comment_starts_nothing(body: str) -> None:
    assert isinstance(decide(ev("pull_request_review_comment", review_comment(body, 7)), CTX),
                      Ignore)
    assert isinstance(decide(ev("issue_comment", comment(body, on_pr=True)), CTX), Ignore)


def test_changes_requested_still_starts_a_review() -> None:
    d = decide(ev("pull_request_review", review("changes_requested", "LGTM otherwise")), CTX)
    assert isinstance(d, StartJob) and d.kind == "review" and d.trigger == "review"


def test_a_comment_only_review_that_mentions_handoff_starts_one() -> None:
    d = decide(ev("pull_request_review", review("commented", "@handoff use a set here")), CTX)
    assert isinstance(d, StartJob) and d.kind == "review" and d.trigger == "mention"
    assert d.feedback == "@handoff use a set here" and d.context["review_id"]


def test_a_new_inline_thread_starts_a_review_of_its_review() -> None:
    data = review_comment("Rename this to count")
    d = decide(ev("pull_request_review_comment", data), CTX)
    assert isinstance(d, StartJob) and d.kind == "review" and d.pr_number == 2
    assert d.context["review_id"] == data["comment"]["pull_request_review_id"]


@pytest.mark.parametrize("association", ["CONTRIBUTOR", "NONE", "FIRST_TIME_CONTRIBUTOR"])
def test_an_outsiders_inline_comment_asks_nothing_unless_it_names_handoff(
        association: str) -> None:
    data = review_comment("Typo here")
    data["comment"]["author_association"] = association
    assert isinstance(decide(ev("pull_request_review_comment", data), CTX), Ignore)
    data["comment"]["body"] = "@handoff fix the typo"
    assert isinstance(decide(ev("pull_request_review_comment", data), CTX), StartJob)


def test_a_mention_in_a_review_thread_is_answered_in_that_thread() -> None:
    d = decide(ev("pull_request_review_comment",
                  review_comment("@Handoff handle None here too", reply_to=77)), CTX)
    assert isinstance(d, StartJob) and d.kind == "mention" and d.requested_by == "maya"
    assert d.context["thread_id"] == 77 and d.context["review_comment_id"] == 284312630
    assert d.feedback == "@Handoff handle None here too"


def test_review_comments_on_other_prs_and_by_bots_are_ignored() -> None:
    assert isinstance(decide(ev("pull_request_review_comment",
                                review_comment("@handoff fix", ref="feature/x")), CTX), Ignore)
    assert isinstance(decide(ev("pull_request_review_comment",
                                review_comment("@handoff fix", login="handoff[bot]")), CTX),
                      Ignore)


def test_a_mention_in_a_pr_comment_starts_an_iteration() -> None:
    d = decide(ev("issue_comment", comment("Thanks! @handoff also cover 0.", on_pr=True)), CTX)
    assert isinstance(d, StartJob) and d.kind == "mention" and d.pr_number == 1
    assert d.feedback == "Thanks! @handoff also cover 0." and d.context["comment_id"]


def test_a_mention_on_an_issue_hands_it_over() -> None:
    d = decide(ev("issue_comment", comment("@handoff can you take this?")), CTX)
    assert isinstance(d, StartJob) and d.kind == "implement" and d.trigger == "mention"
    assert d.context["issue_snapshot"]


@pytest.mark.parametrize("body", ["/rebase", "@handoff rebase", "@handoff rebase please"])
def test_rebase_on_a_pr(body: str) -> None:
    d = decide(ev("issue_comment", comment(body, on_pr=True)), CTX)
    assert isinstance(d, StartJob) and d.kind == "rebase" and d.feedback == ""
    assert isinstance(decide(ev("issue_comment", comment("/rebase")), CTX), Ignore)


@pytest.mark.parametrize("body", [
    "`@handoff` is our bot", "> @handoff fix it\n\nI agree with this", "mail me@handoff.dev",
    "```\n@handoff fix\n```", "@handoffs is another bot", "<!-- @handoff -->"])
def test_mentions_in_code_quotes_and_other_names_are_not_requests(body: str) -> None:
    assert not mentions(body, "handoff")
    assert isinstance(decide(ev("issue_comment", comment(body, on_pr=True)), CTX), Ignore)


def test_mention_commands() -> None:
    assert mention_command("@handoff rebase", "handoff") == "rebase"
    assert mention_command("@handoff please rebase", "handoff") is None
    assert mentions("(@handoff) fix", "handoff") and mentions("@HANDOFF, hi", "handoff")


def rerun(name: str = "Handoff", pulls: list[dict[str, Any]] | None = None,
          slug: str = "handoff") -> dict[str, Any]:
    data = payload("check_run/rerequested")
    data["check_run"].update(name=name, external_id="12", pull_requests=[
        {"number": 3, "head": {"ref": "agent/issue-1-x"}}] if pulls is None else pulls)
    data["check_run"]["app"]["slug"] = slug
    return data


def test_rerun_of_handoffs_check_starts_the_job_again() -> None:
    d = decide(ev("check_run", rerun()), CTX)
    assert isinstance(d, StartJob) and d.kind == "retry" and d.trigger == "rerun"
    assert d.pr_number == 3 and d.context == {"rerun_of": "12"}


def test_rerun_of_other_checks_or_without_a_pr_is_ignored() -> None:
    assert isinstance(decide(ev("check_run", rerun(name="lint")), CTX), Ignore)
    assert isinstance(decide(ev("check_run", rerun(slug="other-ci")), CTX), Ignore)
    assert isinstance(decide(ev("check_run", rerun(pulls=[])), CTX), Ignore)
