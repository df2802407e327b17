"""Token-bucket rate limiter for request starts.

    limiter = RateLimiter(rate=20)      # at most 20 request starts in any 1-second window
    waited = limiter.acquire()          # blocks exactly as long as needed, no polling
    limiter.pause(2.5)                  # a 429 said "retry after 2.5 s": every caller waits

The bucket holds one token (no burst), so starts are spaced ``1/rate`` apart: a provider that
counts requests over any window never sees more than ``rate`` per second from us, and a long run
still sustains the full rate. Each caller reserves the next free slot under a lock and sleeps until
it; a pause pushes every later slot back, and callers already asleep re-check when they wake.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], object]


class RateLimiter:
    __slots__ = ("_clock", "_interval", "_lock", "_next_slot", "_paused_until", "_sleep", "rate")

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        """``rate`` in requests per second; None means unlimited (pauses still apply)."""
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive or None, got {rate}")
        self.rate = rate
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = float("-inf")
        self._paused_until = float("-inf")

    def acquire(self) -> float:
        """Wait for the right to start one request; returns the seconds spent waiting."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._next_slot, self._paused_until)
                self._next_slot = slot + self._interval
                pause_seen = self._paused_until
            delay = slot - now
            if delay <= 0:
                return waited
            self._sleep(delay)
            waited += delay
            with self._lock:
                # A pause imposed while we slept moves our slot behind it.
                if self._paused_until <= pause_seen:
                    return waited

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` from now (a provider's ``retry-after``)."""
        if seconds <= 0:
            return
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            self._next_slot = max(self._next_slot, self._paused_until)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rate={self.rate})"


class NoOpRateLimiter(RateLimiter):
    """No rate limit, but a provider's 429 still pauses every worker."""

    __slots__ = ()

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        super().__init__(None, clock=clock, sleep=sleep)
