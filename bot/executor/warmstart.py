"""Warm or cold: how the sandbox step uses the warm environment cache (``bot.executor.warm``).

``plan`` decides before the sandbox starts (a warm start needs no network and mounts the kept
environment read-only); ``restore`` unpacks it inside the sandbox instead of the setup;
``keep`` keeps what a cold setup on the default branch's tip prepared, before the agent runs.
Each says what it did in the job's record (``environment``, ``environment_reason``), its
transcript and its timings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from bot import metrics
from bot.config import Settings
from bot.executor.agent.transcript import Transcript
from bot.executor.dependencies import Setup
from bot.executor.gitops import Checkout
from bot.executor.run import Run
from bot.executor.sandbox import Backend, Sandbox
from bot.executor.sandbox.base import tree_size
from bot.executor.steps import Prepared
from bot.executor.warm import (
    MOUNT,
    Plan,
    WarmCache,
    capture,
    decide,
    drop_output,
    image_id,
    image_moved,
    key_for,
    resolved_image,
    restore_command,
    setup_steps,
    supported,
)

log = logging.getLogger("handoff.executor")


def cache_of(settings: Settings) -> WarmCache:
    return WarmCache(settings.data_dir / "warm", settings.warm_cache_mb,
                     settings.warm_cache_hours)


async def plan(run: Run, p: Prepared, setup: Setup, backend: Backend,
               settings: Settings) -> Plan:
    """Warm when this repository's kept environment matches its setup as the default branch
    has it now; else cold, and whether the setup's result may be kept."""
    if why := supported(backend):
        return Plan("cold", why)
    if not settings.warm_cache_mb:
        return Plan("cold", "the warm cache is off (`HANDOFF_WARM_CACHE_MB=0`)")
    image = await image_id(backend, p.config.image or settings.sandbox_image)
    key = await key_for(p.checkout, p.base_sha, run.job.installation_id or 0, run.job.repo,
                        image, setup_steps(setup), settings.package_index_env())
    # Kept only from the default branch's own state: a fresh branch at its tip.
    on_base = p.start_sha == p.base_sha
    return decide(cache_of(settings), key, bool(run.record.setup.offline), on_base)


def mounts(found: Plan, backend: Backend) -> list[tuple[Path, str]]:
    """The kept environment, read-only where the sandbox unpacks it from."""
    return [(found.entry.path, MOUNT)] if found.entry and backend.name != "local" else []


async def restore(run: Run, box: Sandbox, found: Plan, backend: Backend,
                  settings: Settings) -> bool:
    """Unpack the kept environment in the sandbox; False (and the plan turned cold, with the
    reason) when it cannot be."""
    assert found.entry is not None
    if moved := image_moved(found.entry, box):
        found.state, found.entry, found.reason = "cold", None, moved
        log.info("job %s: %s; running the setup", run.job.id, moved)
        return False
    # The local backend shows no mounts: its commands read the host path itself.
    where = str(found.entry.path) if backend.name == "local" else MOUNT
    done = await box.exec(restore_command(where))
    if done.ok:
        cache_of(settings).touch(found.entry)
        return True
    found.state, found.entry = "cold", None
    found.reason = (f"the kept environment could not be unpacked ({done.describe()}: "
                    f"{(done.stderr or done.stdout).strip()[-200:]})")
    log.warning("job %s: %s; running the setup", run.job.id, found.reason)
    return False


async def keep(run: Run, co: Checkout, box: Sandbox, found: Plan, backend: Backend,
               settings: Settings, secrets: Sequence[str] = ()) -> None:
    """Keep what the setup prepared, when the plan allows it and it holds none of the
    ``secrets`` its steps were given; a failure only costs the next job its warm start
    (noted in the record, logged)."""
    if not found.keep or found.key is None:
        return
    started = time.monotonic()
    used_mb = await asyncio.to_thread(tree_size, co.work_tree) // (1024 * 1024)
    room_mb = min(backend.limits.workspace_mb - used_mb, settings.warm_cache_mb) * 9 // 10
    try:
        if why := await capture(box, co, room_mb):
            raise OSError(why)
        entry = await cache_of(settings).keep(found.key, co.work_tree, secrets,
                                              resolved_image(box))
    except OSError as exc:
        found.notes.append(f"its environment could not be kept: {exc}")
        log.warning("job %s: the environment was not kept: %s", run.job.id, exc)
    else:
        found.notes.append(f"kept for the next jobs ({entry.size // (1024 * 1024)} MB)")
    finally:
        await drop_output(box, co)
    run.record.timings["keep environment"] = round(time.monotonic() - started, 3)


def record(run: Run, found: Plan, settings: Settings) -> None:
    """Say warm or cold, and why, in the job's record and its transcript."""
    reason = "; ".join([found.reason, *found.notes])
    run.record.setup.environment, run.record.setup.environment_reason = found.state, reason
    metrics.ENVIRONMENTS.labels(found.state).inc()
    Transcript.of_job(settings.data_dir, run.job.id).write(
        "environment", state=found.state, reason=reason,
        key=found.key.digest if found.key else "")
