"""The ``handoff`` command: setup, serve, worker, doctor, jobs, replay, budgets, migrate, backups.

The development commands (the simulator, the scripted model, the demo) are the dev kit's own:
``handoff-dev`` (devkit/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import resource
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from bot import __version__, logs
from bot.config import Settings
from bot.executor.sandbox.podman_conf import use_default_conf
from bot.jobs.states import FINAL, State
from bot.jobs.store import Store
from bot.jobs.store.migrations import NewerSchema
from bot.server import stop_event
from handlers.vocabulary import Event

log = logging.getLogger("handoff.cli")
DB_WAIT_SECONDS = 120.0


def webhook_secret(settings: Settings) -> bytes:
    """The configured secret, or one generated once and kept in the data directory."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value().encode()
    path = settings.data_dir / "webhook-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
        log.warning("no HANDOFF_WEBHOOK_SECRET set: generated one in %s; give GitHub the "
                    "same", path)
    return path.read_text().strip().encode()


def _not_up_yet(exc: Exception) -> bool:
    """Whether the database server is not there or not ready yet (refused, unknown host,
    starting up), as opposed to a fault of Handoff's."""
    import sqlalchemy as sa

    return isinstance(exc, OSError | sa.exc.DBAPIError) or \
        type(exc).__module__.startswith("asyncpg")


async def open_store(settings: Settings, wait: float = DB_WAIT_SECONDS, receiver: bool = True
                     ) -> Store:
    """The job store. A database server that does not answer yet (one started beside Handoff,
    as in deploy/compose.yml) is tried every 2 s for ``wait`` seconds, each try logged; then
    the process exits saying why (a restart policy starts it again)."""
    from sqlalchemy.engine import make_url

    where = make_url(settings.db_url).render_as_string(hide_password=True)
    deadline = time.monotonic() + wait
    while True:
        try:
            # The receiver's deliveries as SQLITE_SYNC says, its WAL copied back in a thread
            # (keep_wal_short); a worker's writes never wait for the disk.
            return await Store.open(settings.db_url,
                                    durable=receiver and settings.sqlite_sync == "full",
                                    checkpoints=not receiver)
        except Exception as exc:
            if where.startswith("sqlite") or not _not_up_yet(exc):
                raise
            reason = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + 2 > deadline:
                raise SystemExit(f"the database at {where} did not answer in {wait:g} s: "
                                 f"{reason}") from exc
            log.warning("waiting for the database at %s: %s; trying again in 2 s",
                        where, reason)
            await asyncio.sleep(2)


async def serve(settings: Settings, with_worker: bool = True, in_process: bool = False
                ) -> None:
    """The receiver, and a worker: a child process by default (bot/workerprocess.py), or on
    the same event loop with ``in_process``."""
    from bot import dashboard
    from bot.loopwatch import watching
    from bot.receiver.web import create_app
    from bot.server import running
    from bot.wiring import build_worker
    from bot.workerprocess import WorkerProcess
    from handlers import Context

    store = await open_store(settings)
    worker = build_worker(settings, store) if with_worker and in_process else None
    child = WorkerProcess(settings.worker_nice, settings.shutdown_grace + settings.stop_seconds) \
        if with_worker and not in_process else None
    on_job = worker.wake.set if worker else child.wake if child else None
    app = create_app(
        store, webhook_secret(settings),
        Context(trigger_label=settings.trigger_label, bot_login=settings.bot_login),
        settings.max_body_bytes, on_job=on_job, routes=dashboard.routes(store, settings),
    )
    stop = stop_event()
    checkpoints = asyncio.create_task(store.keep_wal_short())
    async with watching(settings.loop_stall_ms / 1000), \
            running(app, settings.host, settings.port) as url:
        logs.listening(log, "webhook", f"{url}/webhook", f" (database "
                       f"{settings.db_url.split('://')[0]}, data in {settings.data_dir})")
        async with serve_metrics(settings, store):
            if not settings.app_id:
                log.warning("no GitHub App configured (HANDOFF_APP_ID): register one with "
                            "`handoff setup --webhook-url https://YOUR-HOST/webhook`")
            if worker:
                await worker.run_forever(stop)
            elif child:
                await child.supervise(stop)
            else:
                await stop.wait()
    checkpoints.cancel()
    await store.close()


@contextlib.asynccontextmanager
async def serve_metrics(settings: Settings, store: Store) -> AsyncIterator[None]:
    """``GET /metrics`` on its own address (METRICS_HOST, loopback by default, and
    METRICS_PORT), never on the webhook's public port; nothing without METRICS_PORT."""
    if settings.metrics_port is None:
        yield
        return
    from bot import metrics_port
    from bot.server import running

    async with running(metrics_port.app(store), settings.metrics_host,
                       settings.metrics_port) as url:
        logs.listening(log, "metrics", f"{url}/metrics")
        yield


async def work(settings: Settings, child_of: int = 0, nice: int = 0, wake_fd: int = -1
               ) -> None:
    """A worker process: standalone, or the child of `handoff serve` (``child_of``), which
    wakes it through the pipe ``wake_fd``."""
    from contextlib import AsyncExitStack

    from bot.workerprocess import become_child, reserve_metric_files, wake_on_pipe

    if child_of:
        become_child(child_of, nice)
        reserve_metric_files()  # before prometheus-client maps them (bot.metrics)

    from bot.loopwatch import watching
    from bot.wiring import build_worker

    store = await open_store(settings, receiver=False)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(watching(settings.loop_stall_ms / 1000))
        if not child_of:  # serve's child: its figures go out through serve's /metrics
            await stack.enter_async_context(serve_metrics(settings, store))
        worker = build_worker(settings, store)
        if wake_fd >= 0:
            wake_on_pipe(wake_fd, worker.wake)
        await worker.run_forever(stop_event())
    await store.close()


async def list_jobs(settings: Settings, limit: int) -> None:
    store = await Store.open(settings.db_url)
    rows = await store.list_jobs(limit)
    counts = await store.report_counts()
    await store.close()
    if not rows:
        print("no jobs yet")
    for job in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created_at))
        reason = f"  {job.category}: {job.reason}" if job.reason else ""
        if job.state == State.QUEUED and job.not_before and job.not_before > time.time():
            until = time.strftime("%H:%M:%S", time.localtime(job.not_before))
            reason = f"  waits until {until}: {job.reason}"
        report = ""
        if job.unreportable:
            report = f"  [NOT REPORTED, cannot be: {job.report_error}]"
        elif job.state in FINAL and not job.reported:
            report = f"  [report pending, try {job.report_attempts}: {job.report_error}]"
        print(logs.printable(f"{job.id:>5} {when} {job.state:<10} {job.kind:<9} "
                        f"{job.repo}#{job.issue_number} try {job.attempts}{reason}{report}"))
    if counts["pending"] or counts["unreportable"]:
        print(f"reports: {counts['pending']} pending, {counts['unreportable']} unreportable "
              "(handoff_job_reports{state=pending|unreportable})")


async def migrate(settings: Settings) -> str:
    """``handoff migrate``: what opening the store does (upgrade to head, refuse a newer
    schema), on its own; says the revision now in force."""
    from bot.jobs.store.migrations import head

    store = await open_store(settings, receiver=False)
    await store.close()
    return f"the job store's schema is at revision {head()}, the newest this Handoff knows"


async def replay(settings: Settings, payload: dict[str, object], event_name: str,
                 record: bool) -> None:
    """Send a payload through the handlers; with --record, also through the store."""
    from bot.receiver.ingest import ingest
    from handlers import Context, decide

    ctx = Context(trigger_label=settings.trigger_label, bot_login=settings.bot_login)
    event = Event(name=event_name, payload=payload, delivery_id=f"replay-{time.time_ns()}")
    print(f"decision: {decide(event, ctx)!r}")
    if record:
        store = await Store.open(settings.db_url)
        print(f"outcome: {await ingest(store, ctx, event)!r}")
        await store.close()


async def redeliver(settings: Settings, every: float | None = None,
                    unrecorded: bool = False) -> int:
    """One redelivery sweep, or (``--every``) one every so many seconds until stopped: how a
    machine GitHub cannot reach catches up (``handoff serve`` also runs one at start and
    every 6 hours)."""
    from bot.github.client import GitHubApiError, GitHubApp
    from bot.receiver.redelivery import sweep

    pem = settings.private_key_pem()
    if not settings.app_id or not pem:
        print("needs HANDOFF_APP_ID and HANDOFF_PRIVATE_KEY")
        return 1
    store = await Store.open(settings.db_url)
    github = GitHubApp(settings.app_id, pem, settings.github_url)
    stop = stop_event() if every else asyncio.Event()
    status = 0
    try:
        while True:
            try:
                asked = await sweep(github, store, unrecorded_after=timedelta(
                    seconds=every or 0) if unrecorded else None)
                print(f"asked GitHub to redeliver {len(asked)} missed deliveries", flush=True)
                status = 0
            except GitHubApiError as exc:
                print(f"redelivery sweep failed: {exc}", flush=True)
                status = 1
            if not every:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set():
                break
    finally:
        await github.close()
        await store.close()
    return status


async def setup(settings: Settings, args: argparse.Namespace) -> int:
    """Register the App from app.yml with GitHub's manifest flow and write its settings."""
    from bot.github.registration import Registration, RegistrationError, find_manifest, register

    env_file = Path(args.env_file)
    if env_file.exists() and "HANDOFF_APP_ID=" in env_file.read_text() and not args.force:
        print(f"{env_file} already has HANDOFF_APP_ID; --force registers another App and "
              "replaces it")
        return 1
    api_url = args.github_url or settings.github_url
    try:
        reg = Registration(api_url, args.webhook_url, env_file, find_manifest(args.manifest),
                           org=args.org, name=args.name)
    except RegistrationError as exc:
        print(exc)
        return 1

    def ready(url: str) -> None:
        where = f"organisation {args.org}" if args.org else "your account"
        print(f"Open {url} in a browser signed in to GitHub ({where}): it sends the App's "
              f"manifest to GitHub, where you confirm it; GitHub then sends the browser back "
              f"here. Waiting...", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(url)

    try:
        app = await register(reg, "127.0.0.1", args.port, ready)
    except RegistrationError as exc:
        print(f"registration failed: {exc}")
        return 1
    from bot.github.registration import install_url

    print(f"Registered the GitHub App {app['slug']} (id {app['id']}); wrote HANDOFF_APP_ID, "
          f"HANDOFF_APP_SLUG, HANDOFF_PRIVATE_KEY, HANDOFF_WEBHOOK_SECRET, HANDOFF_CLIENT_ID and "
          f"HANDOFF_CLIENT_SECRET to {env_file} "
          f"(mode 0600).\nNext:\n  1. install it on the repositories it may work in: "
          f"{install_url(app, api_url)}\n  2. handoff doctor\n  3. handoff serve "
          f"(webhooks go to {args.webhook_url})")
    return 0


async def budgets(settings: Settings, args: argparse.Namespace) -> int:
    """``handoff budgets``: set, remove or list the monthly caps with this month's use."""
    from bot.jobs.budgets import Budgets, month_bounds

    store = await Store.open(settings.db_url)
    try:
        caps = Budgets(store.engine)
        if args.action == "set":
            await caps.set(args.scope, args.name, args.dollars, args.jobs)
        elif args.action == "rm" and not await caps.remove(args.scope, args.name):
            print(f"no budget for {args.scope} {args.name}", file=sys.stderr)
            return 1
        found = await caps.caps()
        if not found:
            print("no budgets: jobs are limited only per job (HANDOFF_MAX_COST_USD)")
        resets = time.strftime("%Y-%m-%d", time.gmtime(month_bounds()[1]))
        for use in await caps.usages(found):
            print(f"{use.line()}{'  USED UP' if use.used_up() else ''}  (resets {resets})")
    finally:
        await store.close()
    return 0


def secret_value(prompt: str = "value: ") -> str:
    """A secret's value from stdin (a pipe or a file), or typed at a prompt that does not
    echo it: never from the command line, where shell history and ``ps`` would keep it."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    return sys.stdin.read().removesuffix("\n").removesuffix("\r")


async def secrets_command(settings: Settings, args: argparse.Namespace) -> int:
    """``handoff secrets``: make a key, set, remove or list (names only) setup secrets."""
    from bot.jobs.secrets import SCOPES, Sealer, Secrets, SecretsError, new_key

    if args.action == "key":
        print(new_key())
        return 0
    if args.action != "list" and not (args.scope and args.target and args.name):
        print(f"handoff secrets {args.action} needs a scope ({', '.join(SCOPES)}), its "
              "target (an installation id, an organisation, owner/name) and a name",
              file=sys.stderr)
        return 2
    key = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    store = await Store.open(settings.db_url)
    try:
        box = Secrets(store.engine, key)
        if args.action == "set":
            Sealer(key)  # no key: said before a value is asked for
            await box.set(args.scope, args.target, args.name,
                          secret_value(f"value of {args.name}: "))
            print(f"set {args.name} for {SCOPES[args.scope]} {args.target.lower()}")
        elif args.action == "rm":
            if not await box.remove(args.scope, args.target, args.name):
                print(f"no secret {args.name} for {SCOPES[args.scope]} {args.target}",
                      file=sys.stderr)
                return 1
            print(f"removed {args.name} for {SCOPES[args.scope]} {args.target.lower()}")
        else:
            entries = await box.entries()
            if not entries:
                print("no secrets")
            for e in entries:
                when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.updated_at))
                print(f"{SCOPES[e.scope]} {e.target}  {e.name}  (set {when} UTC)")
    except SecretsError as exc:
        print(f"handoff secrets {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    return 0


def validate(settings: Settings, path: Path, schema: bool) -> int:
    """``handoff validate``: the repository settings file checked as a job checks it."""
    from bot.executor.repo_config import (
        RepoConfigError,
        extends_target,
        json_schema_text,
        parse_repo_config,
        with_defaults,
    )
    from bot.reporter.templates import Templates

    if schema:
        print(json_schema_text(), end="")
        return 0
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return 2
    found = extends_target(text)
    try:
        if found and found[1]:  # the organisation's part is checked where jobs read it
            text = with_defaults(text, "{}")
        parse_repo_config(text, Templates(settings.prompts_dir).names())
    except RepoConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: valid" + (f" (builds on {found[0]}'s, not checked here)"
                              if found and found[1] else ""))
    return 0


def _tune_gc() -> None:
    """Collect garbage less often: one delivery parses into about a thousand objects, so the
    default threshold (700) ran a collection on nearly every request, and full collections
    set the webhook's p99 (bench/ingest.py shows it)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def raise_nofile() -> int:
    """Raise the soft limit on open files to the hard one (systemd's soft default is 1024,
    a few busy jobs' git, SQLite and engine pipes need more); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _fast_event_loop() -> None:
    """Use uvloop where installed (uvicorn[standard] brings it): a faster event loop."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def cache(settings: Settings, action: str, repo: str | None) -> int:
    """``handoff cache``: list the kept warm environments, or clear them."""
    from bot.executor.warmstart import cache_of

    kept = cache_of(settings)
    if action == "clear":
        gone = kept.clear(repo)
        print(f"removed {len(gone)} environment{'s' if len(gone) != 1 else ''}")
        return 0
    now = time.time()
    entries = sorted(kept.entries(), key=lambda e: -e.used)
    for e in entries:
        state = "expired" if kept.expired(e, now) else "fresh"
        print(f"{e.meta.get('repo', '?'):<30} installation {e.meta.get('installation', '?'):<8} "
              f"{e.size / 1048576:8.1f} MB  made {(now - e.created) / 3600:5.1f} h ago  "
              f"used {(now - e.used) / 3600:5.1f} h ago  {state}  {e.meta.get('key', '')[:12]}")
    total = sum(e.size for e in entries) / 1048576
    print(f"{len(entries)} kept, {total:.1f} MB of {settings.warm_cache_mb} MB; each used "
          f"for {settings.warm_cache_hours:g} h")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="handoff", description=__doc__)
    parser.add_argument("--version", action="version", version=f"handoff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="web app, and a worker as its child process")
    p_serve.add_argument("--no-worker", action="store_true", help="web app only")
    p_serve.add_argument("--in-process", action="store_true",
                         help="run the worker on the web app's event loop (one process)")
    p_serve.add_argument("--port", type=int)
    p_worker = sub.add_parser("worker", help="a worker only")
    p_worker.add_argument("--child-of", type=int, default=0, help=argparse.SUPPRESS)
    p_worker.add_argument("--nice", type=int, default=0, help=argparse.SUPPRESS)
    p_worker.add_argument("--wake-fd", type=int, default=-1, help=argparse.SUPPRESS)
    sub.add_parser("doctor", help="check configuration and what Handoff depends on")
    p_jobs = sub.add_parser("jobs", help="recent jobs with state and reason")
    p_jobs.add_argument("-n", type=int, default=20)
    p_replay = sub.add_parser("replay", help="send a payload file through the handlers")
    p_replay.add_argument("file", type=Path)
    p_replay.add_argument("--event", required=True, help="the X-GitHub-Event name")
    p_replay.add_argument("--record", action="store_true", help="also queue what it decides")
    p_redeliver = sub.add_parser("redeliver",
                                 help="ask GitHub to resend deliveries Handoff missed")
    p_redeliver.add_argument("--every", type=float, metavar="SECONDS",
                             help="keep sweeping, this many seconds apart (local development "
                                  "without a public URL)")
    p_redeliver.add_argument("--unrecorded", action="store_true",
                             help="also deliveries GitHub saw answered (by a forwarder such as "
                                  "smee) that never reached Handoff")
    p_setup = sub.add_parser("setup", help="register the GitHub App from app.yml (manifest "
                             "flow) and write its settings to .env")
    p_setup.add_argument("--webhook-url", required=True,
                         help="where GitHub sends webhooks: https://YOUR-HOST/webhook, or a "
                              "smee.io channel for local development")
    p_setup.add_argument("--org", help="register it for this organisation, not your account")
    p_setup.add_argument("--github-url", help="REST API URL (default HANDOFF_GITHUB_URL; "
                         "https://HOST/api/v3 for GitHub Enterprise Server)")
    p_setup.add_argument("--name", help="the App's name (default app.yml's; names are unique "
                         "on GitHub)")
    p_setup.add_argument("--manifest", type=Path, help="default ./app.yml")
    p_setup.add_argument("--env-file", default=".env")
    p_setup.add_argument("--port", type=int, default=0,
                         help="port of the local page on 127.0.0.1 (default any free one)")
    p_setup.add_argument("--open", action="store_true", help="open the page in a browser")
    p_setup.add_argument("--force", action="store_true",
                         help="register even though the env file names an App already")
    p_validate = sub.add_parser("validate", help="check a .github/handoff.yml and name every "
                                "error")
    p_validate.add_argument("file", type=Path, nargs="?", default=Path(".github/handoff.yml"))
    p_validate.add_argument("--schema", action="store_true",
                            help="print the file's JSON Schema instead")
    p_budgets = sub.add_parser("budgets", help="monthly caps per organisation, repository or "
                               "person: list (default), set, rm")
    p_budgets.add_argument("action", nargs="?", choices=["list", "set", "rm"], default="list")
    p_budgets.add_argument("scope", nargs="?", choices=["org", "repo", "person"])
    p_budgets.add_argument("name", nargs="?", help="acme, acme/calc or a login")
    p_budgets.add_argument("--dollars", type=float, help="dollars a month (set)")
    p_budgets.add_argument("--jobs", type=int, help="jobs a month (set)")
    p_cache = sub.add_parser("cache", help="the warm environments kept after setups: list "
                             "(default), clear [REPO]")
    p_cache.add_argument("action", nargs="?", choices=["list", "clear"], default="list")
    p_cache.add_argument("repo", nargs="?", help="owner/name: clear this repository's only")
    p_secrets = sub.add_parser("secrets", help="secrets setup steps get by name, sealed with "
                               "HANDOFF_SECRETS_KEY (values read from stdin or a prompt, "
                               "never printed)")
    p_secrets.add_argument("action", nargs="?", choices=["list", "set", "rm", "key"],
                           default="list")
    p_secrets.add_argument("scope", nargs="?", choices=["installation", "org", "repo"])
    p_secrets.add_argument("target", nargs="?", help="an installation id, acme, or acme/calc")
    p_secrets.add_argument("name", nargs="?", help="the variable's name, e.g. INDEX_TOKEN")
    sub.add_parser("migrate", help="bring the job store's schema up to date (every command "
                   "does so when it opens the store) and say its revision")
    p_backup = sub.add_parser("backup", help="copy the job store to a file (while running)")
    p_backup.add_argument("file", type=Path)
    p_restore = sub.add_parser("restore", help="replace the job store with a backup "
                               "(stop Handoff first)")
    p_restore.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        return run_command(args, settings)
    except NewerSchema as exc:
        print(f"handoff: {exc}", file=sys.stderr)
        return 1


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out one parsed command; its exit status."""
    use_default_conf(settings.sandbox)
    _fast_event_loop()
    logs.setup(settings.log_level.upper(), settings.log_format)
    if args.command in ("serve", "worker"):
        _tune_gc()
        raise_nofile()
    if args.command == "serve":
        shared = None
        if not args.no_worker and not args.in_process:
            from bot.workerprocess import share_metrics

            shared = share_metrics()
        if args.port:
            settings.port = args.port
        try:
            asyncio.run(serve(settings, with_worker=not args.no_worker,
                              in_process=args.in_process))
        finally:
            if shared is not None:
                shutil.rmtree(shared, ignore_errors=True)
    elif args.command == "worker":
        asyncio.run(work(settings, args.child_of, args.nice, args.wake_fd))
    elif args.command == "doctor":
        from bot.doctor import run_doctor

        return asyncio.run(run_doctor(settings))
    elif args.command == "jobs":
        asyncio.run(list_jobs(settings, args.n))
    elif args.command == "redeliver":
        return asyncio.run(redeliver(settings, args.every, args.unrecorded))
    elif args.command == "setup":
        return asyncio.run(setup(settings, args))
    elif args.command == "budgets":
        if args.action != "list" and not (args.scope and args.name):
            print(f"handoff budgets {args.action} needs a scope and a name", file=sys.stderr)
            return 2
        if args.action == "set" and args.dollars is None and args.jobs is None:
            print("handoff budgets set needs --dollars, --jobs or both", file=sys.stderr)
            return 2
        return asyncio.run(budgets(settings, args))
    elif args.command == "cache":
        return cache(settings, args.action, args.repo)
    elif args.command == "secrets":
        return asyncio.run(secrets_command(settings, args))
    elif args.command == "validate":
        return validate(settings, args.file, args.schema)
    elif args.command == "migrate":
        print(asyncio.run(migrate(settings)))
    elif args.command in ("backup", "restore"):
        from bot.backup import BackupError, backup, restore

        try:
            (backup if args.command == "backup" else restore)(settings.db_url, args.file)
        except BackupError as exc:
            print(f"handoff {args.command}: {exc}", file=sys.stderr)
            return 1
        print(f"{'backed up to' if args.command == 'backup' else 'restored from'} {args.file}")
    elif args.command == "replay":
        from handlers.payload import MalformedPayload, parse

        try:
            payload = parse(args.file.read_bytes())
        except MalformedPayload as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 2
        asyncio.run(replay(settings, payload, args.event, args.record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
