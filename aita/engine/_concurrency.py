"""How many calls to keep in flight to a self-hosted server whose constraint is slots, not a rate.

    limit = ConcurrencyLimit()            # what ``max_workers="auto"`` / ``--workers auto`` use
    with limit.slot():                    # waits while ``limit.limit`` calls are in flight
        response = client.complete(...)   # its latency is what the limit learns from

vLLM, llama.cpp's server with ``--parallel N`` and Ollama serve N requests at once and queue the
rest: too few calls in flight leave slots idle, too many only wait in the server's queue (each
answer takes longer, and nothing finishes sooner). No header says N. As TCP Vegas does for a
congestion window (and Netflix's concurrency-limits for services), this estimates it from
latency: the shortest mean of a window is the unloaded latency (one short answer is not: a
model's answers differ in length; the mean, not the median, because with one call over the
slots only one call in ``limit`` waits), and in a window of about ``limit`` answers, ``limit *
(1 - unloaded / mean latency)`` of the calls were queued. A window counts only calls that
started under the limit it judges. More than ``BETA`` of them queued: the limit steps down
(straight to what the latencies say fits, plus one, when far over); fewer than ``ALPHA`` in two
windows running, while the limit was in use: it steps up (doubling until the first sign of a
queue, as TCP's slow start).

Latency alone mistakes slots that share a processor for a queue: llama.cpp's continuous
batching on a CPU decodes its slots together, so two calls each take about 1.5 times as long
as one, and Vegas would hold the limit under the slots. So a longer latency is a queue only if
the calls added since the nearest lower limit measured did not pay off: throughput (calls in
flight over their latency, Little's law) rose by less than ``GAIN`` of what as many free slots
would have added (a real queue adds nothing). So the limit sits at the slots, a third of the
time one above (probing for more), where throughput has stopped rising, and follows the server
as its load changes: a faster server shows a shorter latency at once, and when a step down for
a queue leaves the latency where it was, the server became slower for everyone: the step is
undone and its latency now is the unloaded one (another client's load is not mistaken for a
queue of ours); with nothing measured below (the server changed), one window one below tells.
A failed call (timeout, refused connection) counts as a sign of overload: the limit shrinks by
a quarter.

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
    MIN_WINDOW = 5
    #: the share of a slot's worth of throughput that the calls added since a lower limit must
    #: bring for a longer latency to count as shared slots, not a queue
    GAIN = 0.15

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
        #: after a step down for a queue: the median and the limit before it (the next window
        #: judges it)
        self._cut: tuple[float, int] | None = None
        #: the latency at each limit that was in use (over the windows of its last stay, the
        #: last counting half), and the window that last measured it
        self._seen: dict[int, tuple[float, int]] = {}
        self._windows = 0
        self._stale = 0  # calls in flight that started under the limit before this one
        self._probe_from: int | None = None  # the limit to go back to after one window below

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
            if self._stale > 0:  # it started under another limit: its latency says nothing
                self._stale -= 1  # of this one (the first to end after a change, mostly)
            elif latency is not None and latency > 0:
                self._window.append(latency)
            least = 3 if self._slow_start else self.MIN_WINDOW  # a quick start, then surer
            if self._dropped or len(self._window) >= max(self._limit, least):
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
        before = self._limit
        self._judge()
        if self._limit != before:
            self._stale = self._in_flight

    def _judge(self) -> None:
        samples, self._window = self._window, []
        self._windows += 1
        busiest, self._busiest = self._busiest, self._in_flight
        dropped, self._dropped = self._dropped, False
        if dropped or not samples:
            self._slow_start = False
            self._calm = 0
            self._limit = max(self.minimum, math.floor(self._limit * 0.75))
            return
        typical = statistics.fmean(samples)
        if typical < 0.8 * self._unloaded:  # a faster server: what it did before says nothing
            self._seen.clear()
        self._unloaded = min(self._unloaded, typical)  # a window's, not one short answer's
        if self._cut is not None:  # judged on the window after it
            before, undo = self._cut
            self._cut = None
            if typical > before * (1 + self._limit / undo) / 2:  # fewer in flight,
                self._unloaded = typical  # no shorter: the server is slower for everyone; this
                self._limit = undo  # is its unloaded latency now, and the cut is undone
                self._seen.clear()
                return
        unloaded = self._unloaded
        queued = self._limit * (1.0 - unloaded / typical) if typical > 0 else 0.0
        limit = self._limit
        lower = max((n for n in self._seen if n < limit), default=None)
        shared = busiest >= limit and lower is not None and self._paid_off(limit, typical, lower)
        if busiest >= limit:
            known, when = self._seen.get(limit, (typical, 0))
            stayed = when == self._windows - 1  # an earlier stay's is another server's, maybe
            self._seen[limit] = ((known + typical) / 2 if stayed else typical, self._windows)
        if self._probe_from is not None:  # one below measured: back, to judge by it
            limit, self._probe_from = self._probe_from, None
        elif lower is None and not self._slow_start and limit > self.minimum and busiest >= limit:
            self._probe_from = limit  # nothing below to tell a queue from slots by (the server
            limit -= 1  # changed): measure one below
        elif queued > self.BETA and not shared:
            overshot, self._slow_start = self._slow_start, False
            self._calm = 0
            # what the latencies say fits: the calls answered in the latency of the nearest
            # lower limit (slots decoded together answer later, queue or not), or unloaded
            base = unloaded if lower is None else min(max(self._seen[lower][0], unloaded), typical)
            fits = math.floor(limit * base / typical) + 1
            # (the slow start's last doubling went as far over as the latencies say)
            limit = max(self.minimum, min(limit - 1, fits if overshot else max(fits, limit // 2)))
            self._cut = (typical, self._limit)  # a queue: latency drops as much
        elif (queued < self.ALPHA or shared or lower is None) and busiest >= limit:
            # (nothing queued, or the added calls paid off, or nothing to tell: probe above)
            self._calm += 1
            if self._slow_start and queued < self.ALPHA:
                limit *= 2
            elif self._slow_start:  # latency rose: from now on one step at a time
                self._slow_start = False
            elif self._calm >= 2:
                self._calm = 0
                limit += 1
        else:
            self._calm = 0
        self._limit = max(self.minimum, min(self.maximum, limit))

    def _paid_off(self, limit: int, typical: float, lower: int) -> bool:
        """Whether the calls added since limit ``lower`` raised throughput (calls in flight
        over their latency, Little's law) by at least ``GAIN`` of what as many free slots
        would have: a server that decodes its slots together (llama.cpp's continuous batching
        on CPU) answers each call later when more share it, which is no queue."""
        if typical <= 0:
            return False
        gain = (limit / typical) / (lower / self._seen[lower][0])
        return gain - 1.0 >= self.GAIN * (limit / lower - 1.0)

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
