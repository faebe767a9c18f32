"""``installation``, ``installation_repositories`` and ``ping`` events."""

from __future__ import annotations

from typing import Any

from handlers.router import Context, Router
from handlers.vocabulary import Decision, Event, Pong, RecordInstallation

router = Router()


def _names(repos: list[dict[str, Any]] | None) -> tuple[str, ...]:
    return tuple(str(r.get("full_name", "")) for r in repos or [])


@router.register("installation", reads={"installation.id": int, "installation.account.login": str})
def installation(event: Event, ctx: Context) -> Decision:
    inst = event.payload["installation"]
    return RecordInstallation(
        installation_id=int(inst["id"]), account=str(inst["account"]["login"]),
        action=event.action, repositories_added=_names(event.payload.get("repositories")),
    )


@router.register("installation_repositories",
                 reads={"installation.id": int, "installation.account.login": str})
def repositories(event: Event, ctx: Context) -> Decision:
    inst = event.payload["installation"]
    return RecordInstallation(
        installation_id=int(inst["id"]), account=str(inst["account"]["login"]),
        action=event.action,
        repositories_added=_names(event.payload.get("repositories_added")),
        repositories_removed=_names(event.payload.get("repositories_removed")),
    )


@router.register("ping")
def ping(event: Event, ctx: Context) -> Decision:
    return Pong(zen=str(event.payload.get("zen", "")))
