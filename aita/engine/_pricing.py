"""What a call cost: the provider's reported figure when it gives one, else a price table.

Three sources, in order: the cost the provider reports with the answer (OpenRouter does); the
small table below (or the executor's ``prices=``); then genai-prices, pydantic's maintained
price data for hundreds of models and providers, which ships its data inside the package and is
read offline (aita never asks it to fetch updates). A model none of them knows has no price:
``None``, shown as "price unknown", never as $0.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from aita.engine._client import Usage

if TYPE_CHECKING:
    from aita.engine._tasks import LLMTask

log = logging.getLogger("aita.pricing")

#: USD per million (prompt, completion) tokens. Pass ``prices=`` to the executor to override.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "google/gemini-2.5-flash": (0.30, 2.50),
    "google/gemini-2.5-flash-lite": (0.10, 0.40),
    "google/gemini-2.5-pro": (1.25, 10.00),
    "openai/gpt-4o": (2.50, 10.00),
    "openai/gpt-4o-mini": (0.15, 0.60),
    "openai/gpt-4.1-mini": (0.40, 1.60),
    "anthropic/claude-sonnet-4": (3.00, 15.00),
    "anthropic/claude-3.5-haiku": (0.80, 4.00),
}


def cost_of(
    model: str, usage: Usage, prices: Mapping[str, tuple[float, float]] | None = None
) -> float | None:
    """USD for one call: the provider's figure, else the price table's, else genai-prices';
    None when nobody knows (a local model, a model nobody prices): unknown is not free.

    ``model`` may be OpenRouter's ``provider/model`` or a bare ``model``."""
    if usage.cost is not None:
        return usage.cost
    table = prices if prices is not None else PRICES_PER_MILLION
    price = table.get(model)
    if price is None and "/" not in model:
        price = _listed_under_a_provider(table, model)
    if price is None:
        return _genai_price(model, usage.prompt_tokens, usage.completion_tokens)
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1_000_000


def _listed_under_a_provider(
    table: Mapping[str, tuple[float, float]], model: str
) -> tuple[float, float] | None:
    """The price of the first ``provider/model`` in the table (a loop: a call per task)."""
    suffix = "/" + model
    for name, price in table.items():
        if name.endswith(suffix):
            return price
    return None


def estimate_cost(
    tasks: Iterable[LLMTask], model: str, prices: Mapping[str, tuple[float, float]] | None = None
) -> float | None:
    """USD for one attempt of each task, from estimated prompt and typical answer sizes; None
    when the model's price is unknown."""
    total = 0.0
    for task in tasks:
        usage = Usage(task.estimated_prompt_tokens(), task.expected_output_tokens)
        cost = cost_of(model, usage, prices)
        if cost is None:
            return None
        total += cost
    return total


def _genai_price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """The price genai-prices gives for this usage, or None if it does not know the model."""
    found = _genai_model(model)
    if found is None:
        return None
    provider_id, model_ref = found
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    try:
        price = calc_price(
            PriceUsage(input_tokens=prompt_tokens, output_tokens=completion_tokens),
            model_ref,
            provider_id=provider_id,
        )
        return float(price.total_price)
    except Exception as error:  # pricing must never fail a paid call
        log.debug("genai-prices could not price %s: %s", model, error)
        return None


@functools.lru_cache(maxsize=256)
def _genai_model(model: str) -> tuple[str | None, str] | None:
    """How genai-prices names ``model``: (provider id, model ref), or None if it does not know
    it. ``provider/model`` is looked up as OpenRouter names it, then as the provider's own
    model; a bare name by the model alone. Looked up once per model."""
    try:
        from genai_prices import Usage as PriceUsage
        from genai_prices import calc_price
    except ImportError:  # pragma: no cover - a dependency, but pricing must not need it
        return None
    candidates: list[tuple[str | None, str]] = [(None, model)]
    if "/" in model:
        provider, _, name = model.partition("/")
        candidates = [("openrouter", model), (provider, name)]
    for provider_id, model_ref in candidates:
        try:
            calc_price(
                PriceUsage(input_tokens=1, output_tokens=1), model_ref, provider_id=provider_id
            )
        except LookupError:
            continue
        except Exception as error:
            log.debug("genai-prices could not look up %s: %s", model, error)
            continue
        return provider_id, model_ref
    return None
