"""The rate limiter: when each request may start, and optionally a tokens-per-minute budget.

    limiter = RateLimiter(rate=20, tokens_per_minute=60_000)
    waited = limiter.acquire(tokens=1_200)  # blocks exactly as long as needed, no polling
    limiter.correct(tokens=-300)            # the call used 900: give the rest back
    limiter.pause(2.5)                      # a 429 said "retry after 2.5 s": every caller waits

Both limits are token buckets that hold no burst (the generic cell rate algorithm): each
request reserves the next free slot ``(1 + headroom)/rate`` after the previous one, and its
tokens reserve ``tokens / (tokens_per_minute / 60)`` seconds of the token budget. So no
one-second window sees more than ``rate`` starts, a long run sustains the rate less its
``headroom``, and idle time never banks a burst that a provider would refuse. Callers sleep
until their own slot; a pause pushes every later slot back, and a caller already asleep whose
slot fell inside the pause takes a new one when it wakes (a slot after the pause stands: a short
pause leaves no gap).

Strict servers (at most N requests in any sliding second, or nginx's ``limit_req`` without a
burst) refuse what arrives closer than the spacing, so three things keep the starts as they reach
the server apart, not just as they were reserved. A caller that wakes late (the process stalled)
would start together with the callers whose slots passed meanwhile: it starts no sooner than
one interval after the last start that really happened (less ``JITTER``); a start a little late
(``LATE``, a sleep's overrun) is counted at its time on that chain, so overruns never add up to
a rate below the set one. A stall also holds the request that started just before it, which
then leaves together with the first start after it: a caller that wakes ``STALL`` after its slot
counts the last start as leaving only now. And ``headroom``
(``HEADROOM`` = 2% by default) leaves 20 ms in every second for the time between a start and
the request's arrival, which varies by a few milliseconds from one request to the next; three
times as much in the first second after an idle one, when each request opens a connection.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], object]

#: the default share of the rate left unused for the variation in arrival times (see the module)
HEADROOM = 0.02
#: how much closer than one interval a start may follow the previous real start, in seconds
#: (a sleep that overruns a little; more is a stall, whose backlog must not leave at once)
JITTER = 0.0005
#: how late after the spacing allows it a start still counts as on time, in seconds: a sleep's
#: overrun is not carried on to every later start (the real spacing may shrink by as much)
LATE = 0.002
#: how late after its slot a caller wakes before it counts as a stall, in seconds (the request
#: started last may have been held as long; see the module)
STALL = 0.01


class RateLimiter:
    """Spaces request starts ``1/rate`` apart (and tokens by the budget) for every thread.

    ``clock`` and ``sleep`` are injectable, so tests run on a fake clock in microseconds.
    """

    __slots__ = (
        "_clock",
        "_headroom",
        "_interval",
        "_last_start",
        "_lock",
        "_next_slot",
        "_paused_until",
        "_ramp_until",
        "_sleep",
        "_starts",
        "_token_rate",
        "_tokens_free_at",
        "rate",
        "tokens_per_minute",
    )

    def __init__(
        self,
        rate: float | None,
        *,
        tokens_per_minute: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        headroom: float = HEADROOM,
    ) -> None:
        """``rate`` in requests per second; None means unlimited (pauses still apply).
        ``headroom``: the share of the rate left unused (0 spaces starts exactly ``1/rate``)."""
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive or None, got {rate}")
        if tokens_per_minute is not None and tokens_per_minute <= 0:
            raise ValueError(f"tokens_per_minute must be positive or None, got {tokens_per_minute}")
        if not 0 <= headroom < 1:
            raise ValueError(f"headroom must be in [0, 1), got {headroom}")
        self.rate = rate
        self._headroom = headroom
        self._interval = (1.0 + headroom) / rate if rate else 0.0
        self._last_start = float("-inf")
        self._ramp_until = float("-inf")
        self.tokens_per_minute = tokens_per_minute
        self._token_rate = tokens_per_minute / 60.0 if tokens_per_minute else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = float("-inf")
        self._tokens_free_at = float("-inf")
        self._paused_until = float("-inf")
        self._starts: deque[float] = deque(maxlen=1024)  # real starts, to measure the sent rate

    def acquire(self, tokens: int = 0) -> float:
        """Wait for the right to start one request of about ``tokens`` tokens (counted only with
        ``tokens_per_minute``); returns the seconds spent waiting."""
        waited = 0.0
        while True:
            slot, delay = self.reserve(tokens)
            if delay <= 0:  # its slot is now: it cannot be late for it
                return waited + self._after_last_start()
            self._sleep(delay)
            waited += delay
            # A pause imposed while we slept moves our slot behind it, if it fell inside the
            # pause; a slot after the pause still stands (no gap for a short pause).
            if self.stands(slot):
                return waited + self._after_last_start(slot)

    def _after_last_start(self, slot: float | None = None) -> float:
        """Wait until ``start_delay`` lets this start go; returns the seconds waited."""
        waited = 0.0
        while (delay := self.start_delay(slot)) > 0:
            self._sleep(delay)
            waited += delay
        return waited

    def start_delay(self, slot: float | None = None) -> float:
        """0, counting this start, once one interval (less ``JITTER``) has passed since the last
        real start, else the seconds until then: a caller that woke late never starts in a
        burst with the next. ``slot``: the one this caller waited for (from ``reserve``); if
        it woke ``STALL`` or more after it (or after the spacing allowed it, if later), the
        process stalled, and the start before it may have been held as long."""
        with self._lock:
            now = self._clock()
            if not self._interval:
                self._last_start = now
                self._starts.append(now)
                return 0.0
            earliest = self._last_start + self._interval - min(JITTER, self._interval / 4)
            if slot is not None and max(slot, earliest) <= now - STALL:  # woke late: a stall,
                self._last_start = now  # which may have held the last start until now
                earliest = now + self._interval - min(JITTER, self._interval / 4)
            if now >= earliest:
                late = min(LATE, self._interval / 4)
                self._last_start = max(now - late, self._last_start + self._interval)
                self._starts.append(now)
                return 0.0
            return earliest - now

    def sent_rate(self, window: float) -> float | None:
        """Starts per second over the last ``window`` seconds, between the first and the last
        of them (None: fewer than two); what ``AdaptiveRate`` compares the accepted rate with."""
        with self._lock:
            now = self._clock()
            recent = [t for t in self._starts if now - t <= window]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / max(recent[-1] - recent[0], window / 2)

    def reserve(self, tokens: int = 0) -> tuple[float, float]:
        """``acquire`` for a caller that waits its own way (an event loop): takes the next slot
        without sleeping and returns (slot, seconds until it). After waiting, ``stands(slot)``
        says whether the slot still holds (else ``reserve`` again), then ``start_delay`` spaces
        the real start."""
        with self._lock:
            now = self._clock()
            # A pause moves the next slot behind it, so the slot is never inside one.
            slot = max(now, self._next_slot, self._tokens_free_at)
            if now - self._next_slot >= 1.0:  # the first start in a second: fresh
                self._ramp_until = slot + 1.0  # connections take longer to arrive
            ramp = 1.0 + 2 * self._headroom if slot < self._ramp_until else 1.0
            self._next_slot = slot + self._interval * ramp
            if self._token_rate and tokens:
                self._tokens_free_at = slot + tokens / self._token_rate
        return slot, slot - now

    def stands(self, slot: float) -> bool:
        """A slot from ``reserve`` is still good after its wait: no pause imposed since covers
        it (as in ``acquire``)."""
        with self._lock:
            return slot >= self._paused_until

    def correct(self, tokens: int) -> None:
        """Adjust the token budget by the difference between used and estimated tokens."""
        if self._token_rate and tokens:
            with self._lock:
                self._tokens_free_at += tokens / self._token_rate

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` from now (a provider's ``retry-after``)."""
        if seconds <= 0:
            return
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            self._next_slot = max(self._next_slot, self._paused_until)

    def set_rate(self, rate: float | None) -> None:
        """Change the request rate from now on (adaptive control)."""
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive or None, got {rate}")
        with self._lock:
            self.rate = rate
            self._interval = (1.0 + self._headroom) / rate if rate else 0.0

    def __repr__(self) -> str:
        extra = f", tokens_per_minute={self.tokens_per_minute}" if self.tokens_per_minute else ""
        return f"{type(self).__name__}(rate={self.rate}{extra})"


class NoOpRateLimiter(RateLimiter):
    """No rate limit, but a provider's 429 still pauses every worker."""

    __slots__ = ()

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        super().__init__(None, clock=clock, sleep=sleep)
