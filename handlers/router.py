"""A small router: handlers register for an event name and optional action."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.github.naming import looks_like_bot
from handlers.vocabulary import Decision, Event


@dataclass(frozen=True)
class Context:
    """Configuration a handler may read; nothing here does I/O."""

    trigger_label: str = "agent"
    bot_login: str = "handoff[bot]"

    @property
    def slug(self) -> str:
        """The App's slug: what people write after ``@`` to ask it."""
        return self.bot_login.removesuffix("[bot]")


Handler = Callable[[Event, Context], Decision]


@dataclass(frozen=True)
class Route:
    """A handler and the payload fields it needs: dotted paths (``issue.number``) and the
    type GitHub sends there."""

    handler: Handler
    reads: dict[str, type] = field(default_factory=dict)

    def missing(self, payload: dict[str, Any]) -> list[str]:
        """The declared fields this payload lacks or has in another type (a payload not
        shaped as GitHub sends it)."""
        return [f"{path} ({kind.__name__})" for path, kind in self.reads.items()
                if not _is(_lookup(payload, path), kind)]


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _lookup(payload: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


class Router:
    """Maps (event, action) to handler functions and the fields each reads."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}

    def register(self, event: str, action: str = "", reads: dict[str, type] | None = None
                 ) -> Callable[[Handler], Handler]:
        def add(func: Handler) -> Handler:
            self.routes[(event, action)] = Route(func, reads or {})
            return func

        return add

    def events(self) -> set[str]:
        return {event for event, _ in self.routes}

    def find(self, event: Event) -> Route | None:
        return self.routes.get((event.name, event.action)) or self.routes.get((event.name, ""))


def is_bot(user: dict[str, object] | None, ctx: Context) -> bool:
    """True for bots of any kind, the app itself included; logins alone are not trusted."""
    return looks_like_bot(user) or str((user or {}).get("login", "")) == ctx.bot_login
