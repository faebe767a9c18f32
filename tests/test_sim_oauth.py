"""The simulator's web flow for user access tokens answers as github.com does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sim import simulator

from devkit.simulator import Simulator

CALLBACK = "https://handoff.example/oauth/callback"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    async with simulator(tmp_path / "sim") as s:
        s.world.callback_urls = [CALLBACK]
        s.add_repo("acme/calc", {"README.md": "x\n"}).collaborators["maya"] = "write"
        s.add_repo("acme/web", {"README.md": "x\n"})
        s.add_repo("other/tool", {"README.md": "x\n"}).collaborators["maya"] = "read"
        yield s


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def sign_in_and_authorize(http: httpx.AsyncClient, sim: Simulator, login: str,
                                state: str = "s1") -> str:
    """A person's browser through GitHub's pages: the redirect it ends with."""
    params = {"client_id": sim.world.client_id, "redirect_uri": CALLBACK, "state": state}
    answer = await http.get("/login/oauth/authorize", params=params)
    assert answer.status_code == 302 and answer.headers["location"].startswith("/login?")
    answer = await http.post("/session", data={
        "login": login, "password": "x",
        "return_to": query(answer.headers["location"])["return_to"]})
    answer = await http.get(answer.headers["location"])
    assert answer.status_code == 200 and "Authorize Handoff" in answer.text
    token = answer.text.split('name="authenticity_token" value="')[1].split('"')[0]
    answer = await http.post("/login/oauth/authorize", data={
        **params, "authenticity_token": token, "authorize": "1"})
    assert answer.status_code == 302
    return str(answer.headers["location"])


async def test_web_flow_to_a_user_token_and_the_repos_it_reads(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        target = await sign_in_and_authorize(http, sim, "maya")
        assert target.startswith(CALLBACK + "?") and query(target)["state"] == "s1"
        code = query(target)["code"]
        form = {"client_id": sim.world.client_id, "client_secret": sim.world.client_secret,
                "code": code}
        # Form-encoded unless JSON is asked for; a code works once, then 200 with an error.
        answer = await http.post("/login/oauth/access_token", data=form)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/x-www-form-urlencoded")
        token = query("?" + answer.text)
        assert token["access_token"].startswith("ghu_") and token["token_type"] == "bearer"
        assert token["refresh_token"].startswith("ghr_") and token["expires_in"] == "28800"
        again = await http.post("/login/oauth/access_token", data=form,
                                headers={"Accept": "application/json"})
        assert again.status_code == 200 and again.json()["error"] == "bad_verification_code"
        wrong = await http.post("/login/oauth/access_token", headers={
            "Accept": "application/json"}, data={**form, "client_secret": "nope"})
        assert wrong.json()["error"] == "incorrect_client_credentials"

        # Signed in and authorized once, the next visit goes straight back with a code.
        answer = await http.get("/login/oauth/authorize", params={
            "client_id": sim.world.client_id, "state": "s2"})
        assert answer.status_code == 302 and query(answer.headers["location"])["state"] == "s2"

        auth = {"Authorization": f"Bearer {token['access_token']}"}
        me = (await http.get("/user", headers=auth)).json()
        assert me["login"] == "maya" and me["id"] == sim.person("maya").id
        installs = (await http.get("/user/installations", headers=auth)).json()
        accounts = sorted(i["account"]["login"] for i in installs["installations"])
        assert installs["total_count"] == 2 and accounts == ["acme", "other"]
        acme = next(i["id"] for i in installs["installations"] if i["account"]["login"] == "acme")
        repos = (await http.get(f"/user/installations/{acme}/repositories",
                                headers=auth)).json()
        assert [r["full_name"] for r in repos["repositories"]] == ["acme/calc"]
        assert repos["repositories"][0]["permissions"]["push"] is True
        assert repos["repositories"][0]["permissions"]["admin"] is False

        assert (await http.get("/user", headers={"Authorization": "Bearer ghu_nope"})
                ).status_code == 401
    checked = [c for c in sim.world.calls if c.get("operation")]
    assert {c["operation"] for c in checked} >= {
        "users/get-authenticated", "apps/list-installations-for-authenticated-user",
        "apps/list-installation-repos-for-authenticated-user"}
    assert all(not c.get("response_errors") for c in checked), checked


async def test_a_stranger_sees_no_installation(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        code = query(await sign_in_and_authorize(http, sim, "stranger"))["code"]
        token = (await http.post("/login/oauth/access_token", headers={
            "Accept": "application/json"}, data={
            "client_id": sim.world.client_id, "client_secret": sim.world.client_secret,
            "code": code})).json()["access_token"]
        auth = {"Authorization": f"token {token}"}
        assert (await http.get("/user/installations", headers=auth)).json() == {
            "total_count": 0, "installations": []}
        some = next(iter(sim.world.installations))
        assert (await http.get(f"/user/installations/{some}/repositories",
                               headers=auth)).status_code == 404


async def test_redirects_and_refusals(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        # Over the control API, as `handoff simulator` is driven by hand.
        app = (await http.post("/_sim/oauth-app", json={"callback_urls": [CALLBACK]})).json()
        assert app == {"client_id": sim.world.client_id, "callback_urls": [CALLBACK],
                       "client_secret": sim.world.client_secret}
        # A redirect_uri not registered: back to the registered one with the error.
        answer = await http.get("/login/oauth/authorize", params={
            "client_id": sim.world.client_id, "redirect_uri": "https://evil.example/cb",
            "state": "s"})
        assert answer.headers["location"].startswith(CALLBACK)
        assert query(answer.headers["location"])["error"] == "redirect_uri_mismatch"
        assert (await http.get("/login/oauth/authorize", params={"client_id": "Iv1.nope"})
                ).status_code == 404
        # Cancel on the consent page: access_denied, with the state.
        await http.post("/session", data={"login": "maya", "return_to": "/"})
        page = await http.get("/login/oauth/authorize", params={
            "client_id": sim.world.client_id, "state": "s3"})
        token = page.text.split('name="authenticity_token" value="')[1].split('"')[0]
        answer = await http.post("/login/oauth/authorize", data={
            "client_id": sim.world.client_id, "state": "s3", "authenticity_token": token,
            "authorize": "0"})
        assert query(answer.headers["location"]) | {"error_uri": ""} == {
            "error": "access_denied", "state": "s3", "error_uri": "",
            "error_description": "The user has denied your application access."}
        # Another site's form cannot authorize in the person's name.
        forged = await http.post("/login/oauth/authorize", data={
            "client_id": sim.world.client_id, "authorize": "1"})
        assert forged.status_code == 422
