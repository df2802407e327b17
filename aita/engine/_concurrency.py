"""How many calls to keep in flight to a self-hosted server whose constraint is slots, not a rate.

    limit = ConcurrencyLimit()            # what ``max_workers="auto"`` / ``--workers auto`` use
    with limit.slot():                    # waits while ``limit.limit`` calls are in flight
        response = client.complete(...)   # its latency is what the limit learns from

vLLM, llama.cpp's server with ``--parallel N`` and Ollama serve N requests at once and queue the
rest: too few calls in flight leave slots idle, too many only wait in the server's queue (each
answer takes longer, and nothing finishes sooner). No header says N. As TCP Vegas does for a
congestion window (and Netflix's concurrency-limits for services), this estimates it from
latency alone: the shortest median of a window is the unloaded latency (one short answer is
not: a model's answers differ in length), and in a window of about
``limit`` answers, ``limit * (1 - unloaded / median latency)`` of the calls were queued. More
than ``BETA`` of them queued: the limit steps down (straight to what the latencies say fits,
plus one, when far over); fewer than ``ALPHA`` in two windows running, while the limit was in
use: it steps up (doubling until the first sign of a queue, as TCP's slow start). So the limit
sits at the slots, a third of the time one above (probing for more), where throughput has
stopped rising and latency has not started to climb, and follows the server as its load
changes: a faster server shows a shorter latency at once, and when a step down for a queue
leaves the latency where it was, the server became slower for everyone: the step is undone and
its latency now is the unloaded one (another client's load is not mistaken for a queue of
ours). A failed call (timeout, refused connection) counts as a sign of overload: the limit
shrinks by a quarter.

The clock is injectable: the unit tests run on a fake one.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterator

from aita.errors import ProviderTimeout, ProviderUnreachable


class ConcurrencyLimit:
    """An adaptive limit on calls in flight (see the module)."""

    #: queued calls below which the limit may grow (two windows running)
    ALPHA = 0.3
    #: queued calls above which the limit shrinks
    BETA = 0.5
    #: answers per window at least (a window is ``max(limit, MIN_WINDOW)`` answers)
    MIN_WINDOW = 3

    def __init__(
        self,
        initial: int = 1,
        *,
        minimum: int = 1,
        maximum: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(
                f"need 1 <= minimum <= initial <= maximum, got {minimum}, {initial}, {maximum}"
            )
        self.minimum = minimum
        self.maximum = maximum
        self._limit = initial
        self._clock = clock
        self._cond = threading.Condition()
        self._in_flight = 0
        self._busiest = 0  # the most calls in flight during this window
        self._window: list[float] = []
        self._dropped = False
        self._unloaded = math.inf  # the shortest latency seen (since the server last slowed)
        self._slow_start = True
        self._calm = 0  # windows running with (almost) nothing queued
        #: after a step down for a queue: the median and the limit before it, and whether the
        #: next window judges it
        self._cut: tuple[float, int, bool] | None = None

    @property
    def limit(self) -> int:
        """Calls allowed in flight now."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Calls in flight now."""
        return self._in_flight

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait until fewer than ``limit`` calls are in flight, then count one more; False if
        ``stop`` was set first (nothing is counted then)."""
        with self._cond:
            while self._in_flight >= self._limit:
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(0.1 if stop is not None else None)
            self._in_flight += 1
            self._busiest = max(self._busiest, self._in_flight)
            return True

    def release(self, latency: float | None, *, dropped: bool = False) -> None:
        """One call ended after ``latency`` seconds (None: unknown); ``dropped``: it failed in
        a way that says the server is overloaded (a timeout, a refused connection)."""
        with self._cond:
            self._in_flight -= 1
            self._dropped = self._dropped or dropped
            if latency is not None and latency > 0:
                self._window.append(latency)
            if self._dropped or len(self._window) >= max(self._limit, self.MIN_WINDOW):
                self._update()
            self._cond.notify_all()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``limit`` places for a call, learning from its latency; a timeout or
        a connection the server dropped or refused counts as a drop."""
        self.acquire()
        started = self._clock()
        dropped = False
        try:
            yield
        except (OSError, ProviderTimeout, ProviderUnreachable):
            dropped = True
            raise
        finally:
            self.release(self._clock() - started, dropped=dropped)

    def _update(self) -> None:
        samples, self._window = self._window, []
        busiest, self._busiest = self._busiest, self._in_flight
        dropped, self._dropped = self._dropped, False
        if dropped or not samples:
            self._slow_start = False
            self._calm = 0
            self._limit = max(self.minimum, math.floor(self._limit * 0.75))
            return
        typical = statistics.median(samples)
        self._unloaded = min(self._unloaded, typical)  # a window's, not one short answer's
        if self._cut is not None:  # judged on the second window after it: the first holds
            before, undo, judge = self._cut  # calls that started before it
            self._cut = (before, undo, True) if not judge else None
            if judge and typical > before * (1 + self._limit / undo) / 2:  # fewer in flight,
                self._unloaded = typical  # no shorter: the server is slower for everyone; this
                self._limit = undo  # is its unloaded latency now, and the cut is undone
                return
        unloaded = self._unloaded
        queued = self._limit * (1.0 - unloaded / typical) if typical > 0 else 0.0
        limit = self._limit
        if queued > self.BETA:
            self._slow_start = False
            self._calm = 0
            fits = math.floor(limit * unloaded / typical) + 1  # what the latencies say
            limit = max(self.minimum, min(limit - 1, max(fits, limit // 2)))
            self._cut = (typical, self._limit, False)  # a queue: latency drops as much
        elif queued < self.ALPHA and busiest >= limit:
            self._calm += 1
            if self._slow_start:
                limit *= 2
            elif self._calm >= 2:
                self._calm = 0
                limit += 1
        else:
            self._calm = 0
        self._limit = max(self.minimum, min(self.maximum, limit))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(limit={self._limit}, in_flight={self._in_flight})"


class NoConcurrencyLimit:
    """A fixed number of workers: every worker calls as soon as it has a task."""

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        yield


#: worker threads under ``max_workers="auto"``: the most calls the limit may allow in flight
AUTO_MAX_WORKERS = 64

#: the default of a fixed number of workers
NO_CONCURRENCY_LIMIT = NoConcurrencyLimit()
