"""How long calls would have taken one after another, from when each started and ended.

A speedup is the time the same calls would take one at a time over the time they took. The
time a call takes under contention is no measure of that: against a server that works on one
request at a time, four calls sent together take 1, 2, 3 and 4 service times, and adding them
up claims a 2.5x speedup where there was none. What one-at-a-time calls would cost is each
call's *service* time: the part of its time the server was working on it, not queueing it.

The client cannot see the server's queue, so it reads it from the timings: for a server that
works on ``slots`` requests at once, a call that ended while others were in flight began
service no earlier than the moment the ``slots``-th latest of them ended (a slot came free
then), and its service time is what follows. ``slots`` is read from the run itself: each
candidate from 1 to the most calls ever in flight together implies a set of service times, and
the right one makes them alike. With one slot a parallel server's calls, which end moments
apart, would imply service times of a few milliseconds beside calls that took a second; with
as many slots as calls a one-at-a-time server's calls would imply service times growing with
their place in the queue. When the timings cannot tell (service times that differ a lot
anyway), the fewer slots win: the estimate is then low, and a speedup understated, never
overstated.

Exact for servers of any width whose calls take about the same time (the simulator, and a
pipeline's steps of a kind); with no call at all there is nothing to estimate (0.0).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence

#: how much more alike (standard deviation of log service times) more slots must make the
#: service times before they are believed over fewer
_TOLERANCE = 0.15
_FLOOR = 1e-4  # seconds: no call is served faster than this


def sequential_seconds(calls: Sequence[tuple[float, float]]) -> float:
    """The sum of the calls' service times; ``calls`` are (start, end) in seconds on one
    clock, one per call to the server (every attempt of a retried task)."""
    by_end = sorted(calls, key=lambda call: call[1])
    if not by_end:
        return 0.0
    best_spread, best_total = math.inf, 0.0
    for slots in range(1, most_in_flight(by_end) + 1):
        services = service_times(by_end, slots)
        spread = _spread(services)
        if spread < best_spread - _TOLERANCE:
            best_spread, best_total = spread, sum(services)
    return best_total


def service_times(by_end: Sequence[tuple[float, float]], slots: int) -> list[float]:
    """Each call's service time on a server of ``slots`` slots (``by_end``: sorted by end)."""
    ends = [end for _, end in by_end]
    services = []
    for i, (start, end) in enumerate(by_end):
        # calls that ended before this one did and after it had started: in flight beside it
        first_beside = bisect.bisect_right(ends, start, 0, i)
        began = start if i - first_beside < slots else max(start, ends[i - slots])
        services.append(max(end - began, 0.0))
    return services


def most_in_flight(calls: Sequence[tuple[float, float]]) -> int:
    """The most calls in flight at one instant."""
    events = sorted([(start, 1) for start, _ in calls] + [(end, -1) for _, end in calls])
    most = current = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start
        current += change
        most = max(most, current)
    return max(most, 1)


def _spread(services: list[float]) -> float:
    logs = [math.log(max(s, _FLOOR)) for s in services]
    return statistics.pstdev(logs) if len(logs) > 1 else 0.0
