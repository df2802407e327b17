"""Adaptive rate control: keeps the limiter at or under the provider's real limit.

A configured rate can be wrong (another process shares the key, the plan changed, the provider
is busy). This reads what the provider says and does, and adjusts the limiter:

- a 429 pauses everyone for its ``retry-after`` and cuts the rate by ``DECREASE`` (once per
  cool-down, so the refusals of requests already in flight count once);
- at a 429, ``x-ratelimit-limit-requests`` is a hint of how far to cut: read as requests per
  minute (OpenAI's convention) it caps the rate at ``SAFETY`` of that limit. Headers are hints,
  not orders: a value that is zero, negative or not a number is ignored; the header's window is
  not assumed, so it is never used without a 429 showing the client is above the limit, and a
  cap taken from it never holds the client below the rate the provider was accepting (measured
  over the last second) or below one ordinary cut. A server that sends its limit per second
  (``20``, read as 0.33/s) or per day therefore never throttles a client it is not refusing;
- after ``RECOVERY_SECONDS`` without a 429 the rate climbs back by ``INCREASE`` of the target,
  up to the configured rate (or the cap); a client configured without a limit learns one from
  its observed rate at the first 429, and lifts it again once well past it.

So a server that refuses is never hammered, and a batch recovers its speed when it can.
``x-ratelimit-remaining-requests`` is deliberately not used to pause: its reset time is when
the whole window refills, and waiting for that at every empty bucket would halve throughput
at the limit, which the spacing of the limiter already respects.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from aita.engine._limiter import RateLimiter
from aita.errors import RateLimited


class AdaptiveRate:
    """Adjusts a ``RateLimiter`` from the provider's answers and 429s (see the module)."""

    #: the cap taken from ``x-ratelimit-limit-requests``, as a share of it
    SAFETY = 0.97
    #: the rate after a 429, as a share of the rate before it
    DECREASE = 0.7
    #: each step back up, as a share of the target rate
    INCREASE = 0.1
    #: seconds without a 429 (or a change) before the next step up
    RECOVERY_SECONDS = 2.0
    #: seconds of answers over which the accepted rate is measured
    WINDOW = 1.0

    def __init__(
        self,
        limiter: RateLimiter,
        configured: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.configured = configured
        #: the cap learned at a 429 (from the limit header, the accepted rate or a cut)
        self.provider_cap: float | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._last_cut = float("-inf")
        self._last_raise = float("-inf")
        self._recent: deque[float] = deque(maxlen=1024)  # answer times, to measure rates from
        self._first_answer: float | None = None
        self._hint: float | None = None  # the limit header, read as requests per minute
        self._peak = 0.0  # the observed rate when an unlimited client was first refused
        self._last_change = float("-inf")

    @property
    def target(self) -> float | None:
        """The rate to climb back to: the configured one, or the provider's cap if lower."""
        caps = [r for r in (self.configured, self.provider_cap) if r is not None]
        return min(caps) if caps else None

    def on_response(self, headers: Mapping[str, str]) -> None:
        """An answered call: note its time and headers; apply a cap or step back up."""
        now = self._clock()
        with self._lock:
            self._recent.append(now)
            if self._first_answer is None:
                self._first_answer = now
            self._hint = limit_hint(headers) or self._hint
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
            self._hint = limit_hint(error.headers) or self._hint
            if sent_at is not None and sent_at < self._last_change:
                return
            if now - self._last_cut < max(wait, 0.5):
                return  # refusals of requests already in flight: one cut is enough
            self._last_cut = now
            current = self.limiter.rate
            if current is None:
                current = self._observed_rate(now, 2.0)
                if current is None:
                    return  # nothing to learn a rate from yet: the pause will do
                self._peak = current
            cut = max(0.1, current * self.DECREASE)
            if self._hint is not None and self.configured is not None:
                self.provider_cap = self._cap_from_hint(self._hint, cut, now)
                cut = min(cut, self.provider_cap)
            self._set(cut)

    def _cap_from_hint(self, hint: float, cut: float, now: float) -> float:
        """The header's limit as a cap, but never below what the provider was accepting, and
        never deeper than one ordinary cut when that cannot be measured yet."""
        floor = cut
        measured = self._first_answer is not None and now - self._first_answer >= self.WINDOW
        if measured:
            accepted = self._observed_rate(now, self.WINDOW)
            floor = self.SAFETY * accepted if accepted is not None else 0.1
        return max(self.SAFETY * hint, floor)

    def _set(self, rate: float | None) -> None:
        self.limiter.set_rate(rate)
        self._last_change = self._clock()

    def _observed_rate(self, now: float, window: float) -> float | None:
        """Answers per second over the last ``window`` seconds (between the first and the last
        of them, so a count of n spans n - 1 gaps)."""
        recent = [t for t in self._recent if now - t <= window]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / max(recent[-1] - recent[0], window / 2)


def limit_hint(headers: Mapping[str, str]) -> float | None:
    """``x-ratelimit-limit-requests`` as requests per second (read as per minute); None for a
    missing, zero, negative or non-numeric value."""
    raw = headers.get("x-ratelimit-limit-requests")
    if not raw:
        return None
    try:
        limit = float(raw)
    except ValueError:
        return None
    if not math.isfinite(limit) or limit <= 0:
        return None
    return limit / 60.0
