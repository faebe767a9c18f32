"""The simulator's user tokens past the first exchange, as github.com has them: a refresh token
works once and replaces both tokens; a code is bound to its redirect URI; the ``/user`` side
wants a person's token; a JSON exchange; an App registered from a manifest has its own
client, and one without callback URLs gets GitHub's mismatch page."""

# ruff: noqa: F811  (``sim`` is test_sim_oauth's fixture, which pytest passes by name)
from __future__ import annotations

import httpx
from sim import app_client
from test_sim_oauth import CALLBACK, query, sign_in_and_authorize, sim  # noqa: F401  (the fixture)

from devkit.simulator import Simulator

JSON = {"Accept": "application/json"}


async def exchange(http: httpx.AsyncClient, sim: Simulator, **form: str) -> dict[str, str]:
    """The token endpoint's JSON answer to ``form`` (with the App's client credentials)."""
    body = {"client_id": sim.world.client_id, "client_secret": sim.world.client_secret, **form}
    return dict((await http.post("/login/oauth/access_token", json=body, headers=JSON)).json())


async def test_a_refresh_token_works_once_and_replaces_both_tokens(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        code = query(await sign_in_and_authorize(http, sim, "maya"))["code"]
        first = await exchange(http, sim, code=code)
        second = await exchange(http, sim, grant_type="refresh_token",
                                refresh_token=first["refresh_token"])
        again = await exchange(http, sim, grant_type="refresh_token",
                               refresh_token=first["refresh_token"])

        async def who(token: str) -> int:
            return (await http.get("/user", headers={"Authorization": f"token {token}"})
                    ).status_code

        assert second["access_token"] != first["access_token"]
        assert second["refresh_token"] != first["refresh_token"]
        assert (await who(first["access_token"]), await who(second["access_token"])) == \
            (401, 200)
    assert again["error"] == "bad_refresh_token"


async def test_a_code_is_exchanged_only_for_the_redirect_uri_it_was_given_to(
        sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        code = query(await sign_in_and_authorize(http, sim, "maya"))["code"]
        elsewhere = await exchange(http, sim, code=code, redirect_uri="https://evil.example/cb")
        there = await exchange(http, sim, code=code, redirect_uri=CALLBACK)
        garbled = await http.post("/login/oauth/access_token", content=b"{not json",
                                  headers={**JSON, "Content-Type": "application/json"})
    assert elsewhere["error"] == "redirect_uri_mismatch"
    assert there["access_token"].startswith("ghu_")  # the code was still good
    assert garbled.json()["error"] == "incorrect_client_credentials"


async def test_the_user_endpoints_want_a_persons_token(sim: Simulator) -> None:
    installation = await app_client(sim).repo(next(iter(sim.world.installations)),
                                              "acme/calc").token()
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        nobody = await http.get("/user")
        app = await http.get("/user", headers={"Authorization": f"token {installation}"})
        empty = await http.post("/session", data={"login": "  ", "password": "x"})
    assert (nobody.status_code, nobody.json()["message"]) == (401, "Requires authentication")
    assert (app.status_code, app.json()["message"]) == (
        403, "Resource not accessible by integration")
    assert empty.status_code == 422 and "Incorrect username or password" in empty.text


async def test_an_app_made_from_a_manifest_has_its_own_client(sim: Simulator) -> None:
    made = sim.register_app({"name": "Handoff Staging", "url": "https://staging.example",
                             "hook_attributes": {"url": "https://staging.example/webhook"},
                             "callback_urls": ["https://staging.example/oauth/callback"]},
                            "acme")
    bare = sim.register_app({"name": "Handoff Bare", "url": "https://bare.example",
                             "hook_attributes": {}}, "acme")
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        await http.post("/session", data={"login": "maya", "return_to": "/"})
        consent = await http.get("/login/oauth/authorize", params={"client_id": made.client_id})
        mismatch = await http.get("/login/oauth/authorize", params={"client_id": bare.client_id})
    assert consent.status_code == 200 and "Authorize Handoff Staging" in consent.text
    assert mismatch.status_code == 400 and "Redirect URI mismatch" in mismatch.text
