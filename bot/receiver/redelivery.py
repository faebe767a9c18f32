"""Recover deliveries GitHub could not hand over (Handoff was down): ask GitHub to send again.

GitHub does not redeliver failed deliveries by itself. This sweep lists the App's recent
deliveries, groups them by GUID, and asks for one redelivery of each GUID that never got an
OK answer and that Handoff has not recorded, within GitHub's window (3 days; 7 on GHES).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.github.client import GitHubApp
from bot.jobs.store import Deliveries

log = logging.getLogger("handoff.redelivery")
WINDOW = timedelta(days=3)


def missed(deliveries: list[dict[str, Any]], now: datetime,
           unrecorded_after: timedelta | None = None) -> dict[str, int]:
    """GUID -> the delivery id to redeliver, for GUIDs with no successful attempt; with
    ``unrecorded_after``, also those answered OK whose last attempt is at least that old (a
    forwarder such as smee.io answers GitHub even when it could not pass the delivery on;
    whether Handoff has it is for the caller to check)."""
    by_guid: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_guid.setdefault(str(d["guid"]), []).append(d)
    out = {}
    for guid, attempts in by_guid.items():
        latest = max(attempts, key=lambda a: str(a.get("delivered_at", "")))
        when = datetime.fromisoformat(str(latest["delivered_at"]).replace("Z", "+00:00"))
        if any(a.get("status") == "OK" for a in attempts) and (
                unrecorded_after is None or now - when < unrecorded_after):
            continue
        if now - when <= WINDOW:
            out[guid] = int(latest["id"])
    return out


async def sweep(github: GitHubApp, store: Deliveries, pages: int = 10,
                unrecorded_after: timedelta | None = None) -> list[str]:
    """Redeliver what was missed; returns the GUIDs asked for again."""
    deliveries = await github.deliveries(pages)  # follows GitHub's cursor (Link: rel="next")
    asked = []
    now = datetime.now(UTC)
    for guid, delivery_id in missed(deliveries, now, unrecorded_after).items():
        if await store.delivery(guid) is not None:
            continue  # recorded here; GitHub just did not see our answer
        await github.app_request("POST", f"/app/hook/deliveries/{delivery_id}/attempts")
        asked.append(guid)
    if asked:
        log.warning("asked GitHub to redeliver %d missed deliveries", len(asked))
    return asked
