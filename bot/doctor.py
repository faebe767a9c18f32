"""``handoff doctor``: what is configured, what is missing, and whether each dependency answers
— each checked the way a job will use it: the key signs, GitHub accepts it, the model endpoint
lists models, and a sandbox starts with the configured image and limits."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from bot.config import Settings
from bot.jobs.store import Store

Result = tuple[bool | None, str, str]


def _line(ok: bool | None, what: str, detail: str) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
    return f"[{mark}] {what:<18} {detail}"


def load_key(pem: str) -> str | None:
    """Why the PEM text is not a usable private key, or None when it is one."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        return f"does not parse as a PEM private key ({exc})"
    except Exception as exc:  # cryptography's own errors for unsupported keys
        return f"does not parse as a PEM private key ({type(exc).__name__}: {exc})"
    if not isinstance(key, rsa.RSAPrivateKey):
        return f"is a {type(key).__name__}, GitHub Apps sign with RSA keys"
    return None


def check_config(settings: Settings) -> list[Result]:
    out: list[Result] = []
    if quoted := quoted_settings(settings):
        out.append((False, "quoted values", f"{', '.join(quoted)} start and end with a quote, "
                    "which is then part of the value (kubectl --from-env-file and systemd's "
                    "EnvironmentFile keep quotes): write them unquoted"))
    out.append((bool(settings.app_id), "app id", settings.app_id or "missing: HANDOFF_APP_ID"))
    try:
        pem = settings.private_key_pem()
    except OSError as exc:
        out.append((False, "private key", f"cannot read: {exc}"))
    else:
        if pem is None:
            out.append((False, "private key", "missing: HANDOFF_PRIVATE_KEY (PEM text or a path)"))
        elif problem := load_key(pem):
            out.append((False, "private key", problem))
        else:
            out.append((True, "private key", "an RSA private key"))
    out.append((settings.webhook_secret is not None or None, "webhook secret",
                "set" if settings.webhook_secret else
                f"not set: one is generated in {settings.data_dir / 'webhook-secret'}"))
    out.append((True, "github url", settings.github_url))
    out.append((True, "trigger label", settings.trigger_label))
    out.append((True, "concurrency", str(settings.concurrency)))
    out.append(check_price(settings))
    out += check_corporate_network(settings)
    out.append(check_secrets_key(settings))
    return out


def check_corporate_network(settings: Settings) -> list[Result]:
    """The extra CA bundle parses; the upstream proxy, named without its credentials."""
    from urllib.parse import urlsplit

    from bot.executor.sandbox.trust import read_certificates

    out: list[Result] = []
    if settings.extra_ca_certs is not None:
        try:
            certificates = read_certificates(settings.extra_ca_certs)
        except ValueError as exc:
            out.append((False, "extra CA certs", str(exc)))
        else:
            names = ", ".join(c.subject.rfc4514_string() for c in certificates[:3])
            out.append((True, "extra CA certs", f"{len(certificates)} certificate(s) every "
                        f"sandbox trusts: {names}{' ...' if len(certificates) > 3 else ''}"))
    if upstream := settings.egress_upstream_proxy.get_secret_value():
        parts = urlsplit(upstream)
        out.append((True, "upstream proxy", f"egress goes through {parts.hostname}:{parts.port}"
                    + (" (with credentials)" if parts.username is not None else "")))
    return out


def check_secrets_key(settings: Settings) -> Result:
    """Whether secrets for setup steps can be sealed and opened."""
    from bot.jobs.secrets import Sealer, SecretsError

    if settings.secrets_key is None:
        return (True, "secrets key", "not set: setup steps get no secrets (`handoff secrets "
                "key` makes one)")
    try:
        Sealer(settings.secrets_key.get_secret_value())
    except SecretsError as exc:
        return (False, "secrets key", str(exc))
    return (True, "secrets key", "set: `handoff secrets` seals values with it")


def quoted_settings(settings: Settings) -> list[str]:
    """The names of the App's settings whose value came wrapped in quotes."""
    values = {"HANDOFF_APP_ID": settings.app_id,
              "HANDOFF_WEBHOOK_SECRET": settings.webhook_secret,
              "HANDOFF_PRIVATE_KEY": settings.private_key}
    names = []
    for name, value in values.items():
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text and len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
            names.append(name)
    return names


def check_price(settings: Settings) -> Result:
    if settings.agent_command:
        return True, "model price", "an external agent counts its own cost"
    from bot.prices import lookup

    price = lookup(settings.model_name, settings.prices)
    if price is None:
        return None, "model price", (
            f"no price for {settings.model_name}: cost shows $0 and MAX_COST_USD cannot stop "
            "a job (add it to HANDOFF_PRICES)")
    return True, "model price", (f"{settings.model_name}: ${price[0]:g} in, ${price[1]:g} out "
                                 f"per million tokens; a job stops at ${settings.max_cost_usd:g}")


async def check_agent(settings: Settings) -> Result | None:
    """A CLI preset as the server's agent: whether the engine has the image that holds it."""
    if settings.agent == "built-in":
        return None
    what = f"agent {settings.agent}"
    if settings.sandbox not in ("podman", "docker"):
        return None, what, (f"runs in {settings.agent_image} on {settings.sandbox}: "
                            "not checked from here")
    probe = await asyncio.create_subprocess_exec(
        settings.sandbox, "image", "inspect", settings.agent_image,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    if await probe.wait() != 0:
        return False, what, (f"{settings.sandbox} has no image {settings.agent_image} "
                             "(deploy/sandbox/build.sh --flavour agents builds it)")
    return True, what, f"its CLI runs in {settings.agent_image}"


async def check_github(settings: Settings) -> Result | None:
    """The App as GitHub sees it (``GET /app`` with a JWT): one try, no retries."""
    try:
        pem = settings.private_key_pem()
    except OSError:
        return None
    if not settings.app_id or not pem or load_key(pem):
        return None  # already reported above
    from bot.github.client import GitHubApiError, GitHubApp
    from bot.github.retry import RetryPolicy

    try:
        async with GitHubApp(settings.app_id, pem, settings.github_url, timeout=10,
                             policy=RetryPolicy(attempts=1)) as gh:
            app = await gh.app_request("GET", "/app")
    except GitHubApiError as exc:
        hint = " (is HANDOFF_APP_ID this key's App?)" if exc.status == 401 else ""
        return False, "github app", f"{exc}{hint}"
    slug = str(app.get("slug", ""))
    if slug and slug != settings.app_slug:
        return None, "github app", (f"GitHub knows this App as {slug!r}; set "
                                    f"HANDOFF_APP_SLUG={slug} so its own comments are ignored")
    return True, "github app", f"{app.get('name', slug)} ({slug}) accepts the key"


async def check_sign_in(settings: Settings) -> Result:
    """The dashboard's GitHub sign-in: both halves set, and GitHub takes them (a made-up
    code is refused as a bad code, not as bad client credentials)."""
    from bot.dashboard.signin import GitHubSignIn, SignInError

    if not settings.client_id and not settings.client_secret:
        return None, "sign-in", ("off: set HANDOFF_CLIENT_ID and HANDOFF_CLIENT_SECRET "
                                 "(`handoff setup` writes them) so people sign in to the "
                                 "dashboard with GitHub")
    if not settings.client_id or not settings.client_secret:
        missing = "HANDOFF_CLIENT_SECRET" if settings.client_id else "HANDOFF_CLIENT_ID"
        return False, "sign-in", f"missing: {missing} (the client id and secret go together)"
    try:
        answer = await GitHubSignIn(settings).token_answer("handoff-doctor-probe")
    except SignInError as exc:
        return False, "sign-in", str(exc)
    if answer.get("error") != "bad_verification_code":
        return False, "sign-in", f"GitHub refused the client id and secret: " \
            f"{answer.get('error_description') or answer.get('error') or answer}"
    where = settings.public_url or "https://YOUR-HOST"
    return True, "sign-in", (f"GitHub knows the client id; the App's callback URL must be "
                             f"{where}/oauth/callback")


async def check_database(settings: Settings) -> Result:
    try:
        store = await asyncio.wait_for(Store.open(settings.db_url), 10)
        await store.ping()
        await store.close()
    except Exception as exc:  # doctor reports every failure as a verdict
        return False, "database", f"{settings.db_url.split('://')[0]}: {exc}"
    return True, "database", f"{settings.db_url.split('://')[0]} answers, schema up to date"


async def check_engine(settings: Settings) -> Result:
    """Start a sandbox as a job would (image, limits, no network) and run one command in it."""
    from bot.executor.sandbox import SandboxError, make_backend

    if settings.sandbox == "local":
        return False, "sandbox", "local runs commands on the host, isolated from nothing: " \
            "for tests only; choose podman, docker or bubblewrap"
    if settings.sandbox == "bubblewrap" and not shutil.which("bwrap"):
        return False, "sandbox", "bwrap not found (apt-get install bubblewrap)"
    if settings.sandbox in ("podman", "docker") and not shutil.which(settings.sandbox):
        return False, "sandbox", f"{settings.sandbox} not found on PATH"
    workspace = Path(tempfile.mkdtemp(prefix="handoff-doctor-"))
    workspace.chmod(0o777)
    started = time.monotonic()
    try:
        backend = make_backend(settings)
        try:
            box = await asyncio.wait_for(backend.start(f"doctor-{int(time.time())}",
                                                       workspace), 120)
            try:
                result = await box.exec("echo sandbox-ok", timeout=60)
            finally:
                await box.close()
        finally:
            await backend.close()
    except (SandboxError, TimeoutError, OSError) as exc:
        hint = (" (deploy/sandbox/build.sh builds it)" if "image" in str(exc).lower() else "")
        return False, "sandbox", f"{settings.sandbox} could not start a sandbox: {exc}{hint}"
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    if result.exit_code != 0 or "sandbox-ok" not in result.stdout:
        return False, "sandbox", (f"{settings.sandbox} started a sandbox but a command in it "
                                  f"failed ({result.exit_code}): {result.stderr.strip()[:200]}")
    image = "" if settings.sandbox == "bubblewrap" else f"image {settings.sandbox_image}, "
    return True, "sandbox", (f"{settings.sandbox} ran a command in a sandbox ({image}"
                             f"{settings.sandbox_memory_mb} MB, {settings.sandbox_cpus:g} CPUs) "
                             f"in {time.monotonic() - started:.1f} s")


async def check_workspace_disk(settings: Settings) -> Result | None:
    """Whether work trees get a volume of their own (a hard disk limit) or the watchdog only:
    a small volume is made and removed as a job's would be."""
    from bot.executor import volume

    if settings.sandbox == "kubernetes":
        return None  # the pod's emptyDir has its own size limit
    what = "workspace disk"
    if settings.workspace_volume == "off" or not volume.available():
        why = "HANDOFF_WORKSPACE_VOLUME=off" if settings.workspace_volume == "off" else \
            "the worker is not root or has no loop devices"
        return None, what, (f"watchdog only ({why}): a fast writer can put several times "
                            f"{settings.workspace_max_mb} MB on the disk before it acts")
    folder = Path(tempfile.mkdtemp(prefix="handoff-doctor-volume-"))
    tree, image = folder / "tree", folder / "tree.img"
    try:
        tree.mkdir()
        await volume.mount(tree, image, 1)
    except (volume.VolumeError, OSError) as exc:
        return None, what, f"no volume could be made ({exc}): the watchdog alone"
    finally:
        volume.unmount(tree, image)
        shutil.rmtree(folder, ignore_errors=True)
    return True, what, (f"each work tree on its own volume of "
                        f"{volume.size_mb(settings.workspace_max_mb)} MB")


async def check_model(settings: Settings) -> Result:
    """The endpoint lists its models with the configured key (what a job's first call needs)."""
    base = settings.model_base_url
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    if settings.model_provider == "anthropic":
        url, headers = f"{base}/v1/models", {"anthropic-version": "2023-06-01"}
        if key:
            headers["x-api-key"] = key
    else:
        url, headers = f"{base}/models", {}
        if key:
            headers["authorization"] = f"Bearer {key}"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return False, "model endpoint", f"{url}: {type(exc).__name__}"
    code = resp.status_code
    if code in (401, 403):
        return False, "model endpoint", f"{url} answered {code}: the key was refused " \
            f"(HANDOFF_MODEL_API_KEY)"
    if code == 404:
        return False, "model endpoint", (f"{url} answered 404: no model API there (does "
                                         "HANDOFF_MODEL_BASE_URL need /v1?)")
    if code >= 300:
        return False, "model endpoint", f"{url} answered {code}"
    try:
        names = {str(m.get("id")) for m in resp.json().get("data", [])}
    except (ValueError, AttributeError):
        return False, "model endpoint", f"{url} answered {code} but not with a model list"
    if names and settings.model_name not in names:
        return None, "model endpoint", (f"{url} answers, but does not list "
                                        f"{settings.model_name} (HANDOFF_MODEL_NAME)")
    return True, "model endpoint", f"{url} answers and lists {settings.model_name}"


async def run_doctor(settings: Settings) -> int:
    """Print a verdict per item; exit 1 when anything failed."""
    results = check_config(settings)
    checks = await asyncio.gather(check_github(settings), check_sign_in(settings),
                                  check_database(settings), check_engine(settings),
                                  check_workspace_disk(settings), check_model(settings),
                                  check_agent(settings))
    results += [r for r in checks if r is not None]
    for ok, what, detail in results:
        print(_line(ok, what, detail))
    failed = [what for ok, what, _ in results if ok is False]
    print("verdict: " + (f"not ready ({', '.join(failed)})" if failed else "ready"))
    return 1 if failed else 0
