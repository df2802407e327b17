"""The retry policy: for an error and an attempt, whether to try again, how long to wait, and
whether every worker waits too. The executor asks it and nothing else.

In the manner of tenacity's strategies, the pieces are values: a backoff is any callable
``(attempt) -> seconds`` (``ExponentialBackoff`` by default) and ``RetryPolicy`` combines it with
the retry cap. The error's *type* decides (``is_retryable``), never its message; a server's
``retry-after`` wins over the backoff, capped; a task's ``should_retry`` has the last word for
that task. A 429 pauses every worker (they would all be refused); a refused key or a 404 on the
endpoint itself stops the batch (every other call would be refused the same way); a refused or
reset connection or a 502/503/504 is an outage: every worker waits for the provider
(``OutageGate``) and the task keeps its retries.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aita.errors import (
    AuthenticationFailed,
    EndpointNotFound,
    InvalidResponse,
    ProviderError,
    ProviderUnavailable,
    ProviderUnreachable,
    RateLimited,
    ResponseParseError,
)

if TYPE_CHECKING:
    from aita.engine._tasks import LLMTask

Backoff = Callable[[int], float]

#: Never sleep longer than this on a server's say-so (a misbehaving proxy can send hours).
MAX_RETRY_AFTER = 120.0

#: Errors another attempt could cure: the provider was busy or broken, or the sample was bad.
#: ``OSError`` covers what a user's own client raises for the network (``TimeoutError``,
#: ``ConnectionError``).
RETRYABLE: tuple[type[BaseException], ...] = (
    RateLimited,
    ProviderUnavailable,
    InvalidResponse,
    ResponseParseError,
    OSError,
)

#: Gateway statuses a provider answers with while it is down or being restarted.
OUTAGE_STATUSES = frozenset({502, 503, 504})


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt could succeed, judged by the error's type alone."""
    return isinstance(error, RETRYABLE)


def is_outage(error: BaseException) -> bool:
    """Whether the error says the provider is down, not that this request went wrong: a refused
    or reset connection, or a 502/503/504. Every worker would see the same."""
    if isinstance(error, ProviderUnreachable | ConnectionError):
        return True
    return isinstance(error, ProviderUnavailable) and error.status_code in OUTAGE_STATUSES


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


@dataclass(frozen=True)
class Decision:
    """What to do after a failed attempt."""

    retry: bool
    #: seconds before the next attempt
    delay: float = 0.0
    #: every worker waits ``delay`` (the provider refused for rate), not just this one
    pause_all: bool = False
    #: cancel the tasks not yet started: every other call would fail the same way
    stop_batch: bool = False
    #: the provider is down: every worker waits for it to come back, and the attempt is not
    #: counted against the task's retries
    outage: bool = False


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` attempts after the first, spaced by ``backoff`` or the server's wait."""

    max_retries: int = 3
    backoff: Backoff = field(default_factory=ExponentialBackoff)
    max_retry_after: float = MAX_RETRY_AFTER

    def decide(self, error: BaseException, attempt: int, task: LLMTask | None = None) -> Decision:
        """``attempt`` counts from 0 (the first try); ``task.should_retry`` has the last word."""
        wanted = task.should_retry(error, attempt) if task is not None else is_retryable(error)  # type: ignore[arg-type]
        outage = bool(wanted) and is_outage(error)
        return Decision(
            retry=bool(wanted) and (outage or attempt < self.max_retries),
            delay=self.delay(error, attempt),
            pause_all=isinstance(error, RateLimited),
            stop_batch=isinstance(error, AuthenticationFailed | EndpointNotFound),
            outage=outage,
        )

    def delay(self, error: BaseException, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``: the server's wait, else the backoff."""
        if isinstance(error, ProviderError) and error.retry_after is not None:
            return min(max(0.0, error.retry_after), self.max_retry_after)
        return self.backoff(attempt)
