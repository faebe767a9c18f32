"""``handoff doctor``: what is configured, what is missing, and whether each dependency answers."""

from __future__ import annotations

import asyncio
import shutil

import httpx

from bot.config import Settings
from bot.store import Store


def _line(ok: bool | None, what: str, detail: str) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
    return f"[{mark}] {what:<18} {detail}"


def check_config(settings: Settings) -> list[tuple[bool | None, str, str]]:
    out: list[tuple[bool | None, str, str]] = []
    out.append((bool(settings.app_id), "app id", settings.app_id or "missing: HANDOFF_APP_ID"))
    try:
        pem = settings.private_key_pem()
        out.append((pem is not None and "PRIVATE KEY" in pem, "private key",
                    "set" if pem else "missing: HANDOFF_PRIVATE_KEY (PEM text or a path)"))
    except OSError as exc:
        out.append((False, "private key", f"cannot read: {exc}"))
    out.append((settings.webhook_secret is not None or None, "webhook secret",
                "set" if settings.webhook_secret else
                f"not set: one is generated in {settings.data_dir / 'webhook-secret'}"))
    out.append((True, "github url", settings.github_url))
    out.append((True, "trigger label", settings.trigger_label))
    out.append((True, "concurrency", str(settings.concurrency)))
    return out


async def check_database(settings: Settings) -> tuple[bool, str, str]:
    try:
        store = await asyncio.wait_for(Store.open(settings.db_url), 10)
        await store.ping()
        await store.close()
    except Exception as exc:  # doctor reports every failure as a verdict
        return False, "database", f"{settings.db_url.split('://')[0]}: {exc}"
    return True, "database", f"{settings.db_url.split('://')[0]} answers, schema up to date"


async def check_engine(settings: Settings) -> tuple[bool, str, str]:
    if settings.sandbox == "local":
        return False, "sandbox", "local runs commands on the host, isolated from nothing: " \
            "for tests only; choose podman, docker or bubblewrap"
    if settings.sandbox == "bubblewrap":
        found = shutil.which("bwrap")
        return bool(found), "sandbox", found or "bwrap not found (apt-get install bubblewrap)"
    cli = shutil.which(settings.sandbox)
    if not cli:
        return False, "sandbox", f"{settings.sandbox} not found on PATH"
    proc = await asyncio.create_subprocess_exec(
        cli, "image", "exists" if settings.sandbox == "podman" else "inspect",
        settings.sandbox_image, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    code = await proc.wait()
    if code != 0:
        return False, "sandbox", (f"{settings.sandbox} answers but image "
                                  f"{settings.sandbox_image} is missing (deploy/sandbox/build.sh)")
    return True, "sandbox", f"{settings.sandbox} with image {settings.sandbox_image}"


async def check_model(settings: Settings) -> tuple[bool, str, str]:
    headers = {}
    if settings.model_api_key:
        headers["authorization"] = f"Bearer {settings.model_api_key.get_secret_value()}"
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            resp = await client.get(f"{settings.model_base_url}/models", headers=headers)
    except httpx.HTTPError as exc:
        return False, "model endpoint", f"{settings.model_base_url}: {type(exc).__name__}"
    ok = resp.status_code < 500 and resp.status_code not in (401, 403)
    return ok, "model endpoint", f"{settings.model_base_url} answered {resp.status_code}"


async def run_doctor(settings: Settings) -> int:
    """Print a verdict per item; exit 1 when anything failed."""
    results = check_config(settings)
    results += await asyncio.gather(
        check_database(settings), check_engine(settings), check_model(settings))
    for ok, what, detail in results:
        print(_line(ok, what, detail))
    failed = [what for ok, what, _ in results if ok is False]
    print("verdict: " + (f"not ready ({', '.join(failed)})" if failed else "ready"))
    return 1 if failed else 0
