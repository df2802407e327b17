"""Adaptive rate control: keeps the limiter at or under the provider's real limit.

A configured rate can be wrong (another process shares the key, the plan changed, the provider
is busy). This reads what the provider says and does, and adjusts the limiter:

- a 429 pauses everyone for its ``retry-after`` (without one, as nginx's ``limit_req`` sends
  it, for one interval at the new rate: such a server refuses what arrives too close, and
  admits the next request in time) and sets the rate, once per cool-down (the refusals of
  requests already in flight count once), to ``SAFETY`` of the learned limit: what the provider
  was accepting over the last two seconds, since that is where its limit is, but never below
  one ordinary cut (``DECREASE``) of the rate refused; if it accepted nearly all of that rate
  (``EDGE``), the refusal came at the limit's edge (a strict server, requests that arrived a
  little closer than they were sent) and the rate refused is the learned limit. Nearly all is
  measured against what this process really sent (the limiter's starts), when no pause held it
  back: a stalled process, the first second's wider spacing, or a process that sends a third of
  a limit shared with two others, accepts less than the rate set without being above the
  limit, and learning that as the limit cut the rate by up to ``DECREASE`` at each such refusal.
  Before a second of answers there is nothing to measure: the rate steps down by ``SAFETY``
  and learns nothing;
- ``x-ratelimit-limit-requests`` is a hint of the limit: read as requests per minute (OpenAI's
  convention), it is used at a 429 only if it is plausible, that is below the rate refused but
  above a quarter of it, and not below what the provider was accepting (a key's limit may be
  shared with other clients: once refused below it, the header says nothing of this one's
  share). A server that sends its limit per second (``20``, read as 0.33/s), per day, 0, a
  tiny value or garbage is not believed, and never slows a client it is not refusing;
- the rate the provider accepted when it refused is the learned limit: after
  ``RECOVERY_SECONDS`` without a 429 the rate climbs back by ``INCREASE`` of the configured rate
  up to ``SAFETY`` of the learned limit, then probes above it in steps that start at ``PROBE``
  of it and double (as TCP's congestion control does), up to the configured rate. So a client
  set too high settles just under the real limit, an isolated 429 costs one small step, and a
  limit that was raised is found again; a client configured without a limit learns one from its
  observed rate at the first 429, and lifts it again once well past it.

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

    #: the rate set at a 429, as a share of the learned limit
    SAFETY = 0.97
    #: the deepest cut at a 429, as a share of the rate before it
    DECREASE = 0.7
    #: each step back up to the learned limit, as a share of the configured rate
    INCREASE = 0.1
    #: the first step above the learned limit, as a share of it (each next one doubles)
    PROBE = 0.02
    #: seconds without a 429 (or a change) before the next step up
    RECOVERY_SECONDS = 2.0
    #: seconds of answers over which the accepted rate is measured
    WINDOW = 1.0
    #: a provider that accepted this share of the rate refused at its limit's edge, not above it
    EDGE = 0.9
    #: the shortest pause after a 429 without ``retry-after``, in seconds
    MIN_PAUSE = 0.02

    def __init__(
        self,
        limiter: RateLimiter,
        configured: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.configured = configured
        #: the limit learned at the last 429 (the rate the provider was accepting)
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
        self._probes = 0  # steps taken above the learned limit since the last 429
        self._pauses: deque[tuple[float, float]] = deque(maxlen=64)  # (from, to) held by 429s

    @property
    def target(self) -> float | None:
        """The rate to climb back to: the configured one (None: unlimited)."""
        return self.configured

    def on_response(self, headers: Mapping[str, str]) -> None:
        """An answered call: note its time and headers; step back up after a quiet spell."""
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
                    self._set(min(target, self._raised(current, target)))

    def _raised(self, current: float, target: float) -> float:
        """One step up: quickly to just under the learned limit, then probing above it."""
        learned = self.provider_cap
        if learned is None:
            return current + self.INCREASE * target
        below = self.SAFETY * learned
        if current < below * 0.999:
            return min(below, current + self.INCREASE * target)
        self._probes += 1
        return current + self.PROBE * learned * 2.0 ** (self._probes - 1)

    def on_rate_limited(
        self, error: RateLimited, wait: float, sent_at: float | None = None
    ) -> None:
        """Pause every worker and slow down, unless the refused request was sent before the
        rate last changed (it was refused for the old rate, already corrected)."""
        now = self._clock()
        with self._lock:
            self._hint = limit_hint(error.headers) or self._hint
            stale = sent_at is not None and sent_at < self._last_change
            if not stale and now - self._last_cut >= max(wait, 0.5):
                self._cut(now)
            rate = self.limiter.rate
        if error.retry_after is None and rate:  # a refusal that says nothing of when
            wait = min(wait, max(self.MIN_PAUSE, 1.0 / rate))
        if wait > 0:
            with self._lock:
                self._pauses.append((now, now + wait))
        self.limiter.pause(wait)

    def _cut(self, now: float) -> None:
        current = self.limiter.rate
        if current is None:
            current = self._observed_rate(now, 2.0)
            if current is None:
                return  # nothing to learn a rate from yet: the pause will do
            self._peak = current
        self._last_cut = now
        self._probes = 0
        first = self._first_answer
        accepted = sent = None
        if first is not None and now - first >= self.WINDOW:  # over two seconds when there are
            window = min(2 * self.WINDOW, now - first)  # two
            accepted = self._observed_rate(now, window)
            if self._held(now, window) <= (1 - self.EDGE) * window:  # what was sent is known
                sent = self.limiter.sent_rate(window)
        hint = self._hint
        believable = hint is not None and 0.25 * current < hint <= current
        learned = None
        if hint is not None and believable and (accepted is None or hint >= self.SAFETY * accepted):
            learned = hint  # the provider said where its limit is, and it fits
        elif accepted is not None and accepted >= self.EDGE * min(current, sent or current):
            learned = current  # it took nearly all: at its limit, refused at the edge
        elif accepted is not None:  # above it: the limit is what the provider accepted
            learned = max(self.DECREASE * current, accepted)
        # Before a second of answers a refusal says little (fresh connections arrive unevenly):
        # a small step, and the next refusal, half a second on, is measured.
        rate = self.SAFETY * (current if learned is None else learned)
        if learned is not None and self.configured is not None:
            self.provider_cap = learned
        self._set(max(0.1, rate))

    def _held(self, now: float, window: float) -> float:
        """Seconds of the last ``window`` during which a 429's pause held every start."""
        since = now - window
        return sum(max(0.0, min(end, now) - max(start, since)) for start, end in self._pauses)

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
