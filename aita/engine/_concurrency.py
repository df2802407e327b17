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
started under the limit it judges, and not behind calls of the limit before (they wait in the
server's queue behind those). More than ``BETA`` of them queued: the limit steps down
(straight to what the latencies say fits, plus one, when far over); fewer than ``ALPHA`` in two
windows running, while the limit was in use: it steps up (doubling until the first sign of a
queue, as TCP's slow start).

Latency alone mistakes slots that share a processor for a queue: llama.cpp's continuous
batching on a CPU decodes its slots together, so two calls each take about 1.5 times as long
as one, and Vegas would hold the limit under the slots. So a longer latency is a queue only if
the calls added since the nearest lower limit measured did not pay off: throughput (calls in
flight over their latency, Little's law) rose by less than ``GAIN`` of what as many free slots
would have added, or by less than ``MIN_GAIN`` (a real queue adds nothing), each limit's
latency pooled over its last windows (one window of a few answers of different lengths is too
noisy to tell by). So the limit sits at the slots, where throughput has stopped rising, probing
one above now and then: once its own latency is measured over ``MEMORY`` answers, two windows
after it settles, and twice as long after each probe to that limit that found a queue (up to
``MAX_PATIENCE`` windows), since a probe's calls wait in the server. It follows the server as its
load changes: a faster server shows a shorter latency at once, and when a step down for
a queue leaves the latency where it was (over two windows: one can be a noisy one), the server
became slower for everyone: the step is undone and its latency now is the unloaded one
(another client's load is not mistaken for a queue of ours); with nothing measured below (the
server changed), one window one below tells. A failed call (timeout, refused connection)
counts as a sign of overload: the limit shrinks by a quarter.

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
    #: the least rise of throughput that counts at all: a latency pooled over a few windows is
    #: no surer than this (free slots' share alone would ask 2% of a step from 8 to 9)
    MIN_GAIN = 0.05
    #: answers of earlier windows at a limit that its latency keeps (the newest window adds to
    #: them): one window of a few answers of different lengths is too noisy to compare limits by
    MEMORY = 15
    #: the most windows at the slots between two probes one above (the wait doubles with each
    #: probe that found a queue: a probe's answers wait in the server)
    MAX_PATIENCE = 8

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
        #: calm windows before a probe up to a limit (2 unless probes there found a queue)
        self._patience: dict[int, int] = {}
        self._probed: int | None = None  # the limit the last probe went up to
        #: after a step down for a queue: the latency and the limit before it, and the answers
        #: since, if one window did not settle it (the next one or two windows judge it)
        self._cut: tuple[float, int, list[float]] | None = None
        #: the mean latency at each limit that was in use, and the answers it stands for (at
        #: most ``MEMORY`` of earlier windows, and the last window's)
        self._seen: dict[int, tuple[float, int]] = {}
        #: answers not to count: calls that started under the limit before this one, and the
        #: calls that started while those were still in the server (queued behind them); the
        #: first to end after a change, mostly
        self._stale = 0
        self._older = 0  # of those, the ones that started under the limit before this one
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
                    self._cond.notify()  # (a place it was woken for goes to the next)
                    return False
                self._cond.wait(0.1 if stop is not None else None)
            self._in_flight += 1
            self._busiest = max(self._busiest, self._in_flight)
            if self._older > 0:  # it waits behind calls of the limit before: not a sample
                self._stale += 1
            return True

    def release(self, latency: float | None, *, dropped: bool = False) -> None:
        """One call ended after ``latency`` seconds (None: unknown); ``dropped``: it failed in
        a way that says the server is overloaded (a timeout, a refused connection)."""
        with self._cond:
            self._in_flight -= 1
            self._dropped = self._dropped or dropped
            if self._stale > 0:  # it started under another limit, or behind its calls: its
                self._stale -= 1  # latency says nothing of this one
                self._older = max(0, self._older - 1)
            elif latency is not None and latency > 0:
                self._window.append(latency)
            least = 3 if self._slow_start else self.MIN_WINDOW  # a quick start, then surer
            if self._dropped or len(self._window) >= max(self._limit, least):
                self._update()
            # wake as many waiters as there are places: with 64 worker threads, waking all of
            # them at every answer costs the server's processor time (about 4% of its answers)
            self._cond.notify(max(1, self._limit - self._in_flight))

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
            self._stale = self._older = self._in_flight

    def _judge(self) -> None:
        samples, self._window = self._window, []
        busiest, self._busiest = self._busiest, self._in_flight
        dropped, self._dropped = self._dropped, False
        if dropped or not samples:
            self._slow_start = False
            self._calm = 0
            self._limit = max(self.minimum, math.floor(self._limit * 0.75))
            return
        typical = statistics.fmean(samples)
        if typical < 0.8 * self._unloaded:  # a faster server: what it did before says nothing
            self._forget()
        self._unloaded = min(self._unloaded, typical)  # a window's, not one short answer's
        if self._cut is not None:  # judged on the window after it
            before, undo, earlier = self._cut
            self._cut = None
            after = statistics.fmean(earlier + samples)
            if after > before * (1 + self._limit / undo) / 2:  # fewer in flight, no shorter:
                if not earlier:  # (or one noisy window: a second one tells)
                    self._cut = (before, undo, samples)
                    return
                self._unloaded = after  # the server is slower for everyone; this is its
                self._limit = undo  # unloaded latency now, and the cut is undone
                self._forget()
                return
        unloaded = self._unloaded
        queued = self._limit * (1.0 - unloaded / typical) if typical > 0 else 0.0
        limit = self._limit
        lower = max((n for n in self._seen if n < limit), default=None)
        if busiest >= limit:
            known, weight = self._seen.get(limit, (typical, 0))
            weight = min(weight, self.MEMORY)
            self._seen[limit] = (
                (known * weight + typical * len(samples)) / (weight + len(samples)),
                weight + len(samples),
            )
        shared = busiest >= limit and lower is not None and self._paid_off(limit, lower)
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
            # a queue: latency drops as much (by what the limit's answers say, not this window's)
            self._cut = (self._seen.get(self._limit, (typical, 0))[0], self._limit, [])
            if self._probed == self._limit:  # a probe found a queue: the next one waits longer
                waited = self._patience.get(self._limit, 2)
                self._patience[self._limit] = min(self.MAX_PATIENCE, 2 * waited)
            self._probed = None
        elif (queued < self.ALPHA or shared or lower is None) and busiest >= limit:
            # (nothing queued, or the added calls paid off, or nothing to tell: probe above)
            self._calm += 1
            if self._probed == limit and self._calm >= 2:  # a probe that found no queue
                self._patience.pop(limit, None)  # (in two windows): the next one soon
                self._probed = None
            if self._slow_start and queued < self.ALPHA:
                limit *= 2
            elif self._slow_start:  # latency rose: from now on one step at a time
                self._slow_start = False
            elif (
                self._calm >= self._patience.get(limit + 1, 2)
                and self._seen.get(limit, (0.0, 0))[1] >= self.MEMORY
            ):  # (what a probe is judged against is measured: a few answers are too noisy)
                self._calm = 0
                limit += 1
                self._probed = limit
        else:
            self._calm = 0
        self._limit = max(self.minimum, min(self.maximum, limit))

    def _forget(self) -> None:
        """The server changed: latencies measured before say nothing of it now."""
        self._seen.clear()
        self._patience.clear()
        self._probed = None

    def _paid_off(self, limit: int, lower: int) -> bool:
        """Whether the calls added since limit ``lower`` raised throughput (calls in flight
        over their latency, Little's law) by at least ``GAIN`` of what as many free slots
        would have: a server that decodes its slots together (llama.cpp's continuous batching
        on CPU) answers each call later when more share it, which is no queue."""
        gain = (limit / self._seen[limit][0]) / (lower / self._seen[lower][0])
        return gain - 1.0 >= max(self.MIN_GAIN, self.GAIN * (limit / lower - 1.0))

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
