"""The limiter under a fake clock: exact, instant and never flaky."""

from __future__ import annotations

import bisect
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aita.engine import NoOpRateLimiter, RateLimiter


class FakeClock:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def max_starts_in_window(starts: list[float], window: float = 1.0) -> int:
    starts = sorted(starts)
    eps = 1e-9  # float sums: a start at 1.0000000001 belongs to the next window
    return max(
        (bisect.bisect_left(starts, t + window - eps) - i for i, t in enumerate(starts)), default=0
    )


def test_no_one_second_window_holds_more_than_rate_starts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(1000):
        limiter.acquire()
        starts.append(clock.now)
    assert max_starts_in_window(starts) <= 20


def test_long_run_sustains_the_full_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep)
    for _ in range(5000):
        limiter.acquire()
    achieved = 5000 / clock.now
    assert achieved >= 0.97 * 50


def test_acquire_reports_its_wait_and_does_not_poll() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0.0
    assert limiter.acquire() == 0.25
    assert clock.sleeps == [0.25]  # one computed sleep, no loop of small ones


def test_idle_time_does_not_bank_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now += 60.0
    starts = []
    for _ in range(30):
        limiter.acquire()
        starts.append(clock.now)
    assert max_starts_in_window(starts) <= 10


def test_pause_holds_every_caller() -> None:
    clock = FakeClock()
    limiter = NoOpRateLimiter(clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.pause(2.5)
    limiter.acquire()
    assert clock.now == 2.5
    limiter.acquire()
    assert clock.now == 2.5  # unlimited again after the pause


def test_pause_during_a_sleep_moves_the_sleeper_behind_it() -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:  # a 429 arrives while this caller sleeps
            limiter.pause(3.0)

    limiter = RateLimiter(1, clock=clock, sleep=sleep)
    limiter.acquire()
    limiter.acquire()
    assert clock.now >= 1.0 + 3.0


def test_threads_share_one_rate() -> None:
    limiter = RateLimiter(200)
    starts: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    # 160 starts at 200/s: reservations are spaced 5 ms apart, so the run takes at least 0.795 s.
    assert len(starts) == 160
    assert starts[-1] - starts[0] >= 159 / 200 - 0.01


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=300),
)
def test_rate_holds_under_random_arrivals(rate: int, gaps: list[float]) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    starts = []
    for gap in gaps:
        clock.now += gap
        limiter.acquire()
        starts.append(clock.now)
    assert max_starts_in_window(starts) <= rate


def test_a_short_pause_leaves_no_gap_after_it() -> None:
    """A caller asleep until its slot keeps it when a 429 asks for less than the time left:
    the callers already queued do not all queue again behind the last of them."""
    clock = FakeClock()

    def sleep(seconds: float) -> None:  # a 429 asking for 10 ms arrives half way, once
        clock.now += seconds / 2
        if not clock.sleeps:
            limiter.pause(0.01)
        clock.sleeps.append(seconds)
        clock.now += seconds / 2

    limiter = RateLimiter(10, clock=clock, sleep=sleep)
    limiter.acquire()
    limiter.acquire()
    assert clock.now == pytest.approx(0.1)  # its own slot, not one behind a new queue
