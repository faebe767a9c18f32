"""A small router: handlers register for an event name and optional action."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.decisions import Decision, Event, looks_like_bot


@dataclass(frozen=True)
class Context:
    """Configuration a handler may read; nothing here does I/O."""

    trigger_label: str = "agent"
    bot_login: str = "handoff[bot]"


Handler = Callable[[Event, Context], Decision]


class Router:
    """Maps (event, action) to handler functions."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}

    def register(self, event: str, action: str = "") -> Callable[[Handler], Handler]:
        def add(func: Handler) -> Handler:
            self.routes[(event, action)] = func
            return func

        return add

    def events(self) -> set[str]:
        return {event for event, _ in self.routes}

    def find(self, event: Event) -> Handler | None:
        return self.routes.get((event.name, event.action)) or self.routes.get((event.name, ""))


def is_bot(user: dict[str, object] | None, ctx: Context) -> bool:
    """True for bots of any kind, the app itself included; logins alone are not trusted."""
    return looks_like_bot(user) or str((user or {}).get("login", "")) == ctx.bot_login
