"""What models cost, so ``MAX_COST_USD`` works without configuration.

Dollars per million input and output tokens, from the providers' public price lists (standard
tier, no caching or batch discounts). ``HANDOFF_PRICES`` adds models or overrides these.
A model is found by its exact name, then by the longest known name it starts with (dated
snapshots such as ``claude-sonnet-4-20250514``), after any ``provider/`` prefix (OpenRouter,
LiteLLM).
"""

from __future__ import annotations

import logging

log = logging.getLogger("handoff.prices")

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-5": (1.25, 10.0), "gpt-5-mini": (0.25, 2.0), "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.0, 8.0), "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0), "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.0, 8.0), "o3-mini": (1.10, 4.40), "o4-mini": (1.10, 4.40), "o1": (15.0, 60.0),
    # Anthropic
    "claude-opus-4-5": (5.0, 25.0), "claude-opus-4-1": (15.0, 75.0), "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4-5": (3.0, 15.0), "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0), "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0), "claude-3-5-haiku": (0.80, 4.0),
}
_warned: set[str] = set()


def lookup(model: str, overrides: dict[str, tuple[float, float]] | None = None
           ) -> tuple[float, float] | None:
    """The model's price, or None when neither the settings nor the defaults know it."""
    table = {**DEFAULT_PRICES, **(overrides or {})}
    for name in (model, model.rsplit("/", 1)[-1]):
        if name in table:
            return table[name]
        known = [k for k in table if name.startswith(f"{k}-")]
        if known:
            return table[max(known, key=len)]
    return None


def price_for(model: str, overrides: dict[str, tuple[float, float]] | None = None
              ) -> tuple[float, float]:
    """The price a job counts with; an unknown model counts $0, and says so in the log once."""
    price = lookup(model, overrides)
    if price is None:
        if model not in _warned:
            _warned.add(model)
            log.warning("no price for model %s: its jobs show $0 and MAX_COST_USD cannot stop "
                        "them; add it to HANDOFF_PRICES", model)
        return 0.0, 0.0
    return price
