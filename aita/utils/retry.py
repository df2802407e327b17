"""When to retry and how long to wait: written down once.

``should_retry`` decides by error type (see ``aita.errors``); ``retry_delay`` prefers the server's
own ``retry-after`` and otherwise asks the backoff strategy. A strategy is any callable
``(attempt) -> seconds``; pass your own to the executor to change it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from aita.errors import ProviderError, is_retryable

Backoff = Callable[[int], float]

#: Never sleep longer than this on a server's say-so (a misbehaving proxy can send hours).
MAX_RETRY_AFTER = 120.0


@dataclass(frozen=True)
class ExponentialBackoff:
    """``initial * multiplier**attempt``, capped at ``maximum``, minus up to ``jitter`` of it.

    Jitter spreads workers that failed together so they do not return together.
    """

    initial: float = 0.5
    multiplier: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.25
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def __call__(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt))
        return base * (1.0 - self.jitter * self.rng())


def should_retry(error: BaseException, retry_count: int, max_retries: int) -> bool:
    return retry_count < max_retries and is_retryable(error)


def retry_delay(error: BaseException, attempt: int, backoff: Backoff) -> float:
    """Seconds to wait before attempt ``attempt + 1``."""
    if isinstance(error, ProviderError) and error.retry_after is not None:
        return min(max(0.0, error.retry_after), MAX_RETRY_AFTER)
    return backoff(attempt)
