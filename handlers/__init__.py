"""Webhook handlers: each reads an event and returns a decision. This is the list of them."""

from __future__ import annotations

from handlers import checks, comments, installation, issues, rerun, review_comments, reviews
from handlers.payload import shape_problem
from handlers.router import Context, Router
from handlers.vocabulary import Decision, Event, Ignore

ROUTERS: tuple[Router, ...] = (
    issues.router, comments.router, reviews.router, installation.router, checks.router,
    review_comments.router, rerun.router,
)


def routed_events() -> set[str]:
    """Every event name some handler reacts to."""
    return set().union(*(r.events() for r in ROUTERS))


class HandlerError(Exception):
    """A handler failed on a payload that has every field it declares: a bug in Handoff,
    answered with a 500 so GitHub shows a failed delivery (and redelivers it when asked)."""


def decide(event: Event, ctx: Context) -> Decision:
    """Route an event to its handler. A payload without the fields the handler declares, or
    with any field a handler reads in another type than GitHub sends (``shape_problem``), is
    ignored with the reason; a handler that fails otherwise raises ``HandlerError``."""
    for router in ROUTERS:
        route = router.find(event)
        if route is None:
            continue
        why = ", ".join(route.missing(event.payload)) or shape_problem(event.payload)
        if why:
            return Ignore(f"payload lacks what {event.name}.{event.action} needs: {why}")
        try:
            return route.handler(event, ctx)
        except Exception as exc:
            raise HandlerError(f"the {event.name}.{event.action or '-'} handler failed: "
                               f"{type(exc).__name__}: {exc}") from exc
    return Ignore(f"no handler for {event.name}.{event.action or '-'}")


__all__ = ["Context", "HandlerError", "decide", "routed_events"]
