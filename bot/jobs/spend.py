"""What a job may spend, and what it spent."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bot import metrics
from bot.config import default
from bot.jobs.record import Spent


@dataclass(frozen=True)
class Budget:
    """Bounds on one agent run (by default the settings' defaults)."""

    max_steps: int = default("max_steps")
    max_tokens: int = default("max_tokens")
    max_cost_usd: float = default("max_cost_usd")
    max_wall_seconds: float = default("max_wall_seconds")
    price_in: float = 0.0  # dollars per million input tokens
    price_out: float = 0.0  # dollars per million output tokens
    price_cached_in: float | None = None  # per million cached input tokens; None: price_in


@dataclass
class Spend:
    """Running totals, kept on the job as it goes."""

    steps: int = 0
    input_tokens: int = 0  # all input tokens, cached ones included
    output_tokens: int = 0
    cached_tokens: int = 0  # input tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # input tokens written to it (Anthropic reports these)
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def wall_seconds(self) -> float:
        return time.monotonic() - self.started

    def add_usage(self, budget: Budget, input_tokens: int, output_tokens: int,
                  cached_tokens: int = 0, cache_write_tokens: int = 0) -> None:
        """Count one reply; cached input is priced as cached where the price is known."""
        cached = min(max(cached_tokens, 0), input_tokens)
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cached_tokens += cached
        self.cache_write_tokens += max(cache_write_tokens, 0)
        price_cached = budget.price_in if budget.price_cached_in is None else budget.price_cached_in
        cost = ((input_tokens - cached) * budget.price_in + cached * price_cached
                + output_tokens * budget.price_out) / 1e6
        self.cost_usd += cost
        metrics.TOKENS.labels("input").inc(input_tokens)
        metrics.TOKENS.labels("output").inc(output_tokens)
        metrics.DOLLARS.inc(cost)

    def exhausted(self, budget: Budget) -> str | None:
        """Which bound ran out, in words, or None."""
        if self.steps >= budget.max_steps:
            return f"step budget of {budget.max_steps} steps used up"
        if self.tokens >= budget.max_tokens:
            return f"token budget of {budget.max_tokens:,} tokens used up ({self.tokens:,} spent)"
        if budget.max_cost_usd and self.cost_usd >= budget.max_cost_usd:
            return f"cost budget of ${budget.max_cost_usd:.2f} used up (${self.cost_usd:.4f} spent)"
        if self.wall_seconds >= budget.max_wall_seconds:
            return f"time budget of {budget.max_wall_seconds:.0f}s used up"
        return None

    @classmethod
    def saved(cls, data: Spent) -> Spend:
        """The totals an earlier attempt saved (``stored``), to be shown again or gone on
        from (its wall time counts on from what was saved)."""
        spend = cls(steps=data.steps, input_tokens=data.input_tokens,
                    output_tokens=data.output_tokens, cached_tokens=data.cached_tokens,
                    cache_write_tokens=data.cache_write_tokens, cost_usd=data.cost_usd)
        spend.started -= data.wall_seconds
        return spend

    def stored(self) -> Spent:
        """The totals as the job's record keeps them."""
        return Spent.model_validate(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started")
        out["wall_seconds"] = round(self.wall_seconds, 2)
        out["cost_usd"] = round(self.cost_usd, 6)
        return out

    def line(self) -> str:
        cached = f" ({self.cached_tokens:,} input cached)" if self.cached_tokens else ""
        return (f"{self.steps} steps, {self.tokens:,} tokens{cached}, ${self.cost_usd:.4f}, "
                f"{self.wall_seconds:.0f}s")
