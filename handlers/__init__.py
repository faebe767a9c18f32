"""Webhook handlers: each reads an event and returns a decision. This is the list of them."""

from __future__ import annotations

from bot.decisions import Decision, Event, Ignore
from handlers import comments, installation, issues, reviews
from handlers.router import Context, Router

ROUTERS: tuple[Router, ...] = (
    issues.router, comments.router, reviews.router, installation.router,
)


def routed_events() -> set[str]:
    """Every event name some handler reacts to."""
    return set().union(*(r.events() for r in ROUTERS))


def decide(event: Event, ctx: Context) -> Decision:
    """Route an event to its handler; a payload missing what the handler reads is ignored."""
    for router in ROUTERS:
        handler = router.find(event)
        if handler is not None:
            try:
                return handler(event, ctx)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                return Ignore(f"payload lacks what {event.name}.{event.action} needs: {exc!r}")
    return Ignore(f"no handler for {event.name}.{event.action or '-'}")


__all__ = ["Context", "decide", "routed_events"]
