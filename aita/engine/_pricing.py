"""What a call cost: the provider's reported figure when it gives one, else a price table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from aita.engine._client import Usage

if TYPE_CHECKING:
    from aita.engine._tasks import LLMTask

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
    """USD for one call: the provider's figure, else the price table's; None when neither
    knows (a local model, a model nobody prices): unknown is not free."""
    if usage.cost is not None:
        return usage.cost
    table = prices if prices is not None else PRICES_PER_MILLION
    price = table.get(model)
    if price is None and "/" not in model:
        price = next((p for name, p in table.items() if name.endswith(f"/{model}")), None)
    if price is None:
        return None
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1_000_000


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
