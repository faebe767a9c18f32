"""The simulator refuses what GitHub refuses, with GitHub's words: JWTs that are missing,
garbled, expired, not yet valid or for an unknown App; installation tokens that are
missing or of a suspended installation; a body that is not JSON; a repository that is not
there (over REST and git); a manifest that is not one or whose name is taken."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sim import app_client, simulator

from devkit.simulator import Simulator

REPO = "octo/widgets"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with simulator(tmp_path / "sim") as s:
        s.add_repo(REPO, {"README.md": "# widgets\n"})
        yield s


def said(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, str(answer.json()["message"])


async def test_app_jwts_github_would_refuse(sim: Simulator) -> None:
    now = int(time.time())

    def bearer(**claims: Any) -> dict[str, str]:
        claims = {"iat": now - 30, "exp": now + 300, "iss": str(sim.world.app_id), **claims}
        return {"authorization": "Bearer " + jwt.encode(claims, sim.private_key, "RS256")}

    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        answers = [await http.get("/app", headers=headers) for headers in [
            {}, {"authorization": "Bearer not.a.jwt"}, bearer(iat=now - 900, exp=now - 300),
            bearer(iat=now + 300, exp=now + 500), bearer(iss="424242")]]
    assert said(answers[0]) == (401, "A JSON web token could not be decoded")
    assert said(answers[1])[1].startswith("A JSON web token could not be decoded: ")
    assert said(answers[2])[1].startswith("'Expiration time' claim ('exp') must be a numeric")
    assert said(answers[3])[1] == ("A JSON web token could not be decoded: The token is not "
                                   "yet valid (iat)")
    assert said(answers[4]) == (401, "Integration not found")
    assert all(a.status_code == 401 for a in answers)


async def test_installation_tokens_github_would_refuse(sim: Simulator) -> None:
    installation = next(iter(sim.world.installations))
    token = await app_client(sim).repo(installation, REPO).token()
    async with httpx.AsyncClient(base_url=f"{sim.base_url}/repos") as http:
        anonymous = await http.get(f"/{REPO}")
        unknown = await http.get("/octo/nope", headers={"Authorization": f"token {token}"})
        garbled = await http.post(f"/{REPO}/check-runs", content=b"{name: lint",
                                  headers={"Authorization": f"token {token}"})
        sim.world.installations[installation].suspended = True  # the owner suspends the App
        suspended = await http.get(f"/{REPO}", headers={"Authorization": f"token {token}"})
    assert said(anonymous) == (401, "Requires authentication")
    assert said(unknown) == (404, "Not Found")
    assert said(garbled) == (400, "Problems parsing JSON")
    assert said(suspended) == (403, "This installation has been suspended")


async def test_git_over_http_for_a_repository_that_is_not_there(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        answer = await http.get("/octo/nope.git/info/refs",
                                params={"service": "git-upload-pack"})
    assert (answer.status_code, answer.text) == (404, "Repository not found.\n")


async def test_a_manifest_github_would_not_take(sim: Simulator) -> None:
    good = {"name": "Handoff Dev", "url": "https://h.example",
            "hook_attributes": {"url": "https://h.example/webhook"}}
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        async def post(manifest: str) -> httpx.Response:
            return await http.post("/settings/apps/new", data={"manifest": manifest})

        made = await post(json.dumps(good))
        answers = [await post(text) for text in (
            json.dumps(good), json.dumps(["not", "an", "object"]), "{oops",
            json.dumps({"name": "No URL"}))]
    assert made.status_code == 302 and "code=" in made.headers["location"]
    assert [(a.status_code, a.text) for a in answers] == [
        (422, "Name 'Handoff Dev' is already taken\n"),
        (422, "Invalid manifest: not an object\n"),
        (422, "Invalid manifest: Expecting property name enclosed in double quotes: line 1 "
              "column 2 (char 1)\n"),
        (422, "Invalid manifest: name, url and hook_attributes are needed\n")]
