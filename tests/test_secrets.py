"""Secrets for setup steps: sealed in the job store (SQLite and PostgreSQL), the most specific
scope given, managed with `handoff secrets` without a value ever on the command line or
printed, redacted in every form, and cleared from the files a step leaves them in."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_cli import handoff

from bot import logs
from bot.executor.repo_config import RepoConfigError, parse_repo_config, with_defaults
from bot.executor.sandbox import Limits
from bot.executor.sandbox.bubblewrap import BubblewrapBackend
from bot.executor.scrub import scrub
from bot.jobs.schema import secrets
from bot.jobs.secrets import Secrets, SecretsError, new_key
from bot.jobs.store import Store

VALUE = "idx-7f3e9a2b5c8d4e1f"


async def check_scopes(url: str) -> None:
    store = await Store.open(url)
    key = new_key()
    try:
        box = Secrets(store.engine, key)
        await box.set("installation", "42", "TOKEN", "from-the-installation")
        await box.set("org", "Acme", "TOKEN", "from-the-organisation")
        await box.set("org", "acme", "OTHER", "only-the-organisation")
        await box.set("repo", "acme/calc", "TOKEN", VALUE)
        assert await box.for_repo(42, "Acme/Calc", ["TOKEN", "OTHER", "NONE"]) == {
            "TOKEN": VALUE, "OTHER": "only-the-organisation"}
        assert await box.for_repo(42, "acme/other", ["TOKEN"]) == {
            "TOKEN": "from-the-organisation"}
        assert await box.for_repo(42, "beta/x", ["TOKEN"]) == {"TOKEN": "from-the-installation"}
        assert await box.for_repo(7, "beta/x", ["TOKEN"]) == {}
        async with store.engine.connect() as conn:
            stored = [r.value for r in (await conn.execute(sa.select(secrets))).all()]
        assert stored and not any(VALUE in v or "organisation" in v for v in stored)
        # A sealed value moved to another repository's row does not open there.
        async with store.engine.begin() as conn:
            await conn.execute(secrets.update().where(secrets.c.target == "acme").values(
                value=[v for v in stored if v][-1]))
        with pytest.raises(SecretsError, match="does not open"):
            await box.for_repo(42, "acme/other", ["TOKEN"])
        with pytest.raises(SecretsError, match="does not open"):  # another key
            await Secrets(store.engine, new_key()).for_repo(1, "acme/calc", ["TOKEN"])
        with pytest.raises(SecretsError, match="HANDOFF_SECRETS_KEY"):
            await Secrets(store.engine, None).set("repo", "acme/calc", "X", VALUE)
        with pytest.raises(SecretsError, match="at least 8"):
            await box.set("repo", "acme/calc", "SHORT", "abc")
        assert await box.remove("repo", "acme/calc", "TOKEN")
        assert not await box.remove("repo", "acme/calc", "TOKEN")
    finally:
        await store.close()


async def test_the_most_specific_secret_wins_on_sqlite(tmp_path: Path) -> None:
    await check_scopes(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")


async def test_the_most_specific_secret_wins_on_postgres(pg_url: str) -> None:
    await check_scopes(pg_url)


def test_handoff_secrets_reads_values_from_stdin_and_never_prints_them(tmp_path: Path) -> None:
    key = handoff(tmp_path, "secrets", "key").stdout.strip()
    assert len(base64.urlsafe_b64decode(key)) == 32
    refused = handoff(tmp_path, "secrets", "set", "repo", "acme/calc", "TOKEN")
    assert refused.returncode == 1 and "HANDOFF_SECRETS_KEY" in refused.stderr
    import subprocess
    import sys

    from test_cli import ROOT
    env = {"HANDOFF_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT),
           "HANDOFF_SECRETS_KEY": key, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "secrets", "set", "repo",
                           "acme/calc", "INDEX_TOKEN"], input=VALUE + "\n", text=True,
                          capture_output=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "set INDEX_TOKEN for repository acme/calc" in done.stdout
    listed = handoff(tmp_path, "secrets", "list", HANDOFF_SECRETS_KEY=key)
    assert "repository acme/calc  INDEX_TOKEN" in listed.stdout
    assert VALUE not in listed.stdout + listed.stderr + done.stdout + done.stderr
    assert VALUE.encode() not in (tmp_path / "data" / "handoff.db").read_bytes()
    gone = handoff(tmp_path, "secrets", "rm", "repo", "acme/calc", "INDEX_TOKEN")
    assert gone.returncode == 0 and "no secrets" in handoff(tmp_path, "secrets").stdout
    assert handoff(tmp_path, "secrets", "rm", "repo", "acme/calc", "INDEX_TOKEN").returncode == 1


def test_a_secret_is_redacted_in_plain_hex_and_base64_at_any_offset() -> None:
    secret = "tok-3fa9c2e17b5d4a60-redact-me"
    logs.add_secrets(secret, encoded=True)
    for before in ("", "a", "ab", "abc", "user:"):
        text = f"{before}{secret}\n"
        for shown in (text, text.encode().hex(), text.encode().hex().upper(),
                      base64.b64encode(text.encode()).decode(),
                      base64.urlsafe_b64encode(text.encode()).decode()):
            out = logs.redact(f"output: {shown} end")
            assert "[redacted]" in out and secret not in out
            # What is left around the marker is never enough to rebuild the value.
            assert len(out.replace("[redacted]", "")) < len(f"output: {shown} end") - 8


def test_setup_steps_in_the_settings_file() -> None:
    config = parse_repo_config(
        "setup:\n  - name: private deps\n    run: pip install -r req.txt\n"
        "    secrets: [INDEX_TOKEN]\n    network: [pkgs.acme.dev]\n"
        "  - name: build\n    run: make\nnetwork:\n  agent: [api.acme.dev]\n", [])
    steps = config.setup_steps()
    assert steps is not None and [s.name for s in steps] == ["private deps", "build"]
    assert steps[0].secrets == ["INDEX_TOKEN"] and steps[0].network == ["pkgs.acme.dev"]
    assert config.network.agent == ["api.acme.dev"]
    one = parse_repo_config("setup_command: make deps\n", []).setup_steps()
    assert one is not None and [(s.name, s.run) for s in one] == [("setup", "make deps")]
    assert parse_repo_config("setup_command: ''\n", []).setup_steps() == []
    assert parse_repo_config("", []).setup_steps() is None  # a guessed install may run
    for bad, says in [
            ("setup_command: a\nsetup: [{name: x, run: y}]\n", "not both"),
            ("setup: [{name: x, run: y}, {name: x, run: z}]\n", "differ"),
            ("setup: [{name: x, run: y, secrets: [lower-case]}]\n", "environment variable"),
            ("setup: [{name: x}]\n", "setup.0.run")]:
        with pytest.raises(RepoConfigError, match=says):
            parse_repo_config(bad, [])
    # A repository's own steps replace its organisation's setup whole.
    merged = with_defaults("setup: [{name: x, run: y}]\n", "setup_command: org-wide\n")
    assert parse_repo_config(merged, []).setup_command is None


@pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap is not installed")
async def test_secrets_left_in_files_are_cleared_before_the_agent(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "deep" / "er").mkdir(parents=True)
    (ws / "keep.txt").write_text("nothing secret\n")
    box = await BubblewrapBackend(Limits(timeout=60)).start("scrub", ws)
    try:
        made = await box.exec(
            'printf "machine idx login __token__ password %s\\n" "$T" > .netrc; '
            'printf "%s" "x$T" | base64 > deep/er/b64.txt; '
            'printf "%s" "$T" | od -An -tx1 | tr -d " \\n" > deep/hex.txt; '
            'ln -s /etc/passwd link', env={"T": VALUE})
        assert made.ok, made.stderr
        changed = await scrub(box, [VALUE])
        assert sorted(changed) == ["/workspace/.netrc (rewritten)",
                                   "/workspace/deep/er/b64.txt (rewritten)",
                                   "/workspace/deep/hex.txt (rewritten)"]
        seen = await box.exec("cat .netrc deep/er/b64.txt deep/hex.txt keep.txt")
        assert "[redacted]" in seen.stdout and "nothing secret" in seen.stdout
        for form in logs.forms(VALUE):
            if len(form) >= 8:
                assert form not in seen.stdout
        assert await scrub(box, [VALUE]) == []
    finally:
        await box.close()


def test_doctor_says_whether_secrets_can_be_sealed(tmp_path: Path) -> None:
    from bot.config import Settings
    from bot.doctor import check_secrets_key

    assert check_secrets_key(Settings(_env_file=None))[0] is True  # type: ignore[call-arg]
    bad = check_secrets_key(Settings(_env_file=None, secrets_key="short"))  # type: ignore[call-arg]
    assert bad[0] is False and "handoff secrets key" in bad[2]
    good = Settings(_env_file=None, secrets_key=new_key())  # type: ignore[call-arg]
    assert check_secrets_key(good) == (True, "secrets key",
                                       "set: `handoff secrets` seals values with it")


async def test_mcp_servers_get_their_secrets_from_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.executor.agent.mcp.secrets import stored_secrets

    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    key = new_key()
    try:
        await Secrets(store.engine, key).set("org", "acme", "DOCS_TOKEN", VALUE)
        monkeypatch.setenv("HANDOFF_SECRET_OTHER", "from-the-environment")
        lookup = stored_secrets(store.engine, key, 1, "acme/calc")
        assert await lookup("DOCS_TOKEN") == VALUE
        assert await lookup("OTHER") == "from-the-environment"
        assert await lookup("NONE") is None
        assert logs.redact(base64.b64encode(VALUE.encode()).decode()).startswith("[redacted]")
        assert await stored_secrets(store.engine, None, 1, "acme/calc")("DOCS_TOKEN") is None
    finally:
        await store.close()
