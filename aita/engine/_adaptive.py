"""Adaptive rate control: keeps the limiter at or under the provider's real limit.

A configured rate can be wrong (another process shares the key, the plan changed, the provider
is busy). This reads what the provider says and adjusts the limiter:

- ``x-ratelimit-limit-requests`` (requests per minute, as OpenAI and most compatible servers
  send it) caps the rate at ``SAFETY`` of that limit;
- a 429 pauses everyone for its ``retry-after`` and cuts the rate by ``DECREASE`` (once per
  cool-down, so the refusals of requests already in flight count once);
- after ``RECOVERY_SECONDS`` without a 429 the rate climbs back by ``INCREASE`` of the target,
  up to the configured rate (or the provider's cap); a client configured without a limit
  learns one from its observed rate at the first 429, and lifts it again once well past it.

So a server that refuses is never hammered, and a batch recovers its speed when it can.
``x-ratelimit-remaining-requests`` is deliberately not used to pause: its reset time is when
the whole window refills, and waiting for that at every empty bucket would halve throughput
at the limit, which the spacing of the limiter already respects.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from aita.engine._limiter import RateLimiter
from aita.errors import RateLimited


class AdaptiveRate:
    """Adjusts a ``RateLimiter`` from the provider's headers and 429s (see the module)."""

    #: the cap taken from ``x-ratelimit-limit-requests``, as a share of it
    SAFETY = 0.97
    #: the rate after a 429, as a share of the rate before it
    DECREASE = 0.7
    #: each step back up, as a share of the target rate
    INCREASE = 0.1
    #: seconds without a 429 (or a change) before the next step up
    RECOVERY_SECONDS = 2.0

    def __init__(
        self,
        limiter: RateLimiter,
        configured: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.configured = configured
        self.provider_cap: float | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._last_cut = float("-inf")
        self._last_raise = float("-inf")
        self._recent: deque[float] = deque(maxlen=256)  # success times, to learn a rate from
        self._peak = 0.0  # the observed rate when an unlimited client was first refused
        self._last_change = float("-inf")

    @property
    def target(self) -> float | None:
        caps = [r for r in (self.configured, self.provider_cap) if r is not None]
        return min(caps) if caps else None

    def on_response(self, headers: Mapping[str, str]) -> None:
        now = self._clock()
        with self._lock:
            self._recent.append(now)
            self._read_limits(headers)
            current, target = self.limiter.rate, self.target
            quiet = now - max(self._last_cut, self._last_raise) >= self.RECOVERY_SECONDS
            if target is not None and (current is None or current > target):
                self._set(target)
            elif current is not None and quiet and (target is None or current < target):
                self._last_raise = now
                if target is None:  # no limit was set: grow back, then lift the learned one
                    raised = current * (1 + 5 * self.INCREASE)
                    self._set(None if raised > 2 * self._peak else raised)
                else:
                    self._set(min(target, current + self.INCREASE * target))

    def on_rate_limited(
        self, error: RateLimited, wait: float, sent_at: float | None = None
    ) -> None:
        """Pause every worker for ``wait`` and slow down, unless the refused request was sent
        before the rate last changed (it was refused for the old rate, already corrected)."""
        self.limiter.pause(wait)
        now = self._clock()
        with self._lock:
            self._read_limits(error.headers)
            if sent_at is not None and sent_at < self._last_change:
                return
            if now - self._last_cut < max(wait, 0.5):
                return  # refusals of requests already in flight: one cut is enough
            self._last_cut = now
            current = self.limiter.rate
            if current is None:
                current = self._observed_rate(now)
                if current is None:
                    return  # nothing to learn a rate from yet: the pause will do
                self._peak = current
            self._set(max(0.1, current * self.DECREASE))

    def _set(self, rate: float | None) -> None:
        self.limiter.set_rate(rate)
        self._last_change = self._clock()

    def _read_limits(self, headers: Mapping[str, str]) -> None:
        limit = headers.get("x-ratelimit-limit-requests")
        if limit:
            with contextlib.suppress(ValueError):
                self.provider_cap = self.SAFETY * float(limit) / 60.0

    def _observed_rate(self, now: float) -> float | None:
        recent = [t for t in self._recent if now - t <= 2.0]
        return len(recent) / 2.0 if len(recent) >= 2 else None
