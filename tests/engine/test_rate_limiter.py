"""The limiter under a fake clock: exact, instant and never flaky."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aita.engine import NoOpRateLimiter, RateLimiter
from tests.support.doubles import FakeClock, max_starts_in_window

#: how much closer than one interval the limiter lets a start follow the last (``JITTER``)
JITTER = 0.0005
#: how late a start still counts as on time (``LATE``), and a wake counts as a stall (``STALL``)
LATE = 0.002
STALL = 0.01


def test_no_one_second_window_holds_more_than_rate_starts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep, headroom=0)
    starts = []
    for _ in range(1000):
        limiter.acquire()
        starts.append(clock.now)
    assert max_starts_in_window(starts) <= 20


def test_long_run_sustains_the_full_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep, headroom=0)
    for _ in range(5000):
        limiter.acquire()
    achieved = 5000 / clock.now
    assert achieved >= 0.97 * 50


def test_acquire_reports_its_wait_and_does_not_poll() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep, headroom=0)
    assert limiter.acquire() == 0.0
    assert limiter.acquire() == 0.25
    assert clock.sleeps == [0.25]  # one computed sleep, no loop of small ones


def test_idle_time_does_not_bank_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep, headroom=0)
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

    limiter = RateLimiter(1, clock=clock, sleep=sleep, headroom=0)
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
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep, headroom=0)
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

    limiter = RateLimiter(10, clock=clock, sleep=sleep, headroom=0)
    limiter.acquire()
    limiter.acquire()
    assert clock.now == pytest.approx(0.1)  # its own slot, not one behind a new queue


# -- what the mutants of the limiter showed untested (scripts/mutation.py) ------------------------


@pytest.mark.parametrize("rate", [0, -1, -0.5])
def test_a_rate_that_is_not_positive_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match=f"rate must be positive or None, got {rate}"):
        RateLimiter(rate)
    limiter = RateLimiter(1)
    with pytest.raises(ValueError, match=f"rate must be positive or None, got {rate}"):
        limiter.set_rate(rate)
    assert limiter.rate == 1  # unchanged


@pytest.mark.parametrize("budget", [0, -60])
def test_a_token_budget_that_is_not_positive_is_refused(budget: float) -> None:
    refused = f"tokens_per_minute must be positive or None, got {budget}"
    with pytest.raises(ValueError, match=refused):
        RateLimiter(None, tokens_per_minute=budget)


def test_rates_and_budgets_below_one_are_valid() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, tokens_per_minute=0.5, clock=clock, sleep=clock.sleep, headroom=0)
    limiter.set_rate(0.25)
    limiter.acquire()
    limiter.acquire()
    assert clock.now == 4.0  # one start every 4 s


def test_set_rate_spaces_the_starts_from_then_on() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock, sleep=clock.sleep, headroom=0)
    limiter.acquire()
    limiter.set_rate(4)
    assert limiter.rate == 4
    limiter.acquire()  # the slot reserved at the old rate stands
    assert clock.now == 1.0
    limiter.acquire()
    limiter.acquire()
    assert clock.sleeps == [1.0, 0.25, 0.25]


def test_set_rate_none_lifts_the_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock, sleep=clock.sleep, headroom=0)
    limiter.acquire()
    limiter.set_rate(None)
    limiter.acquire()  # the slot reserved at the old rate stands
    for _ in range(10):
        limiter.acquire()
    assert (limiter.rate, clock.now) == (None, 1.0)


def test_without_a_token_budget_tokens_never_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep, headroom=0)
    for _ in range(10):
        limiter.acquire(tokens=100_000)
        limiter.correct(tokens=50_000)
    assert clock.now == 0.0


def test_a_request_of_unknown_size_takes_nothing_from_the_token_budget() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, tokens_per_minute=60, clock=clock, sleep=clock.sleep, headroom=0)
    for _ in range(10):
        limiter.acquire()
    assert clock.now == 0.0
    limiter.acquire(tokens=2)  # one token a second: the next start is 2 s later
    limiter.acquire()
    assert clock.now == 2.0


def test_a_call_that_used_more_tokens_than_reserved_delays_the_next() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, tokens_per_minute=60, clock=clock, sleep=clock.sleep, headroom=0)
    limiter.acquire(tokens=1)
    limiter.correct(tokens=2)  # it used 3
    limiter.acquire(tokens=1)
    assert clock.now == 3.0


def test_a_pause_that_ends_exactly_at_a_sleepers_slot_leaves_the_slot() -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:  # half way through the wait, a 429 asks for 0.5 s
        clock.now += seconds / 2
        if not clock.sleeps:
            limiter.pause(0.5)
        clock.sleeps.append(seconds)
        clock.now += seconds / 2

    limiter = RateLimiter(1, clock=clock, sleep=sleep, headroom=0)
    limiter.acquire()
    limiter.acquire()  # its slot is at 1.0; the pause ends at 0.5 + 0.5 = 1.0
    assert clock.now == 1.0


def test_a_sleeper_moved_behind_a_pause_reports_its_whole_wait() -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            limiter.pause(3.0)

    limiter = RateLimiter(1, clock=clock, sleep=sleep, headroom=0)
    limiter.acquire()
    waited = limiter.acquire()
    assert waited == clock.now == sum(clock.sleeps) == 4.0


def test_a_pause_of_zero_or_less_holds_no_one() -> None:
    clock = FakeClock()
    limiter = NoOpRateLimiter(clock=clock, sleep=clock.sleep)
    limiter.pause(0)
    limiter.pause(-1)
    limiter.acquire()
    assert clock.now == 0.0


def test_a_pause_never_shortens_a_longer_one() -> None:
    clock = FakeClock()
    limiter = NoOpRateLimiter(clock=clock, sleep=clock.sleep)
    limiter.pause(5.0)
    limiter.pause(1.0)
    limiter.acquire()
    assert clock.now == 5.0


def test_the_limiter_says_what_it_limits() -> None:
    assert repr(RateLimiter(20)) == "RateLimiter(rate=20)"
    assert repr(RateLimiter(2.5, tokens_per_minute=60_000)) == (
        "RateLimiter(rate=2.5, tokens_per_minute=60000)"
    )
    assert repr(NoOpRateLimiter()) == "NoOpRateLimiter(rate=None)"
    limiter = RateLimiter(None, tokens_per_minute=90)
    assert (limiter.rate, limiter.tokens_per_minute) == (None, 90)


# -- reserve and stands: the same schedule for a caller that waits its own way (an event loop) --


def test_reserve_takes_the_next_slot_without_sleeping() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep, headroom=0)
    assert limiter.reserve() == (0.0, 0.0)
    assert limiter.reserve() == (0.25, 0.25)
    clock.now = 0.1
    slot, delay = limiter.reserve()
    assert slot == 0.5 and delay == pytest.approx(0.4)
    assert clock.sleeps == []


def test_reserve_spends_the_token_budget() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, tokens_per_minute=600, clock=clock, sleep=clock.sleep)  # 10/s
    assert limiter.reserve(20) == (0.0, 0.0)
    assert limiter.reserve(0) == (2.0, 2.0)  # the 20 tokens hold the budget for 2 s


def test_a_pause_after_a_reservation_moves_only_a_slot_inside_it() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep, headroom=0)
    limiter.reserve()
    inside, _ = limiter.reserve()  # 0.25
    limiter.pause(1.0)
    assert not limiter.stands(inside)  # ask again: the next slot is after the pause
    assert limiter.reserve()[0] == 1.0
    assert limiter.stands(1.0) and limiter.stands(2.0)


@settings(max_examples=50, deadline=None)
@given(
    rate=st.one_of(st.none(), st.floats(1, 100)),
    calls=st.lists(
        st.tuples(st.integers(0, 500), st.floats(0, 0.5), st.floats(0, 0.3)), max_size=30
    ),
)
def test_reserving_and_waiting_starts_calls_when_acquire_would(
    rate: float | None, calls: list[tuple[int, float, float]]
) -> None:
    """Each call: its tokens, the time before it comes, and a pause imposed just before it."""
    clocks = FakeClock(), FakeClock()
    sync, loop = (RateLimiter(rate, tokens_per_minute=6000, clock=c, sleep=c.sleep) for c in clocks)
    for tokens, gap, pause in calls:
        for clock, limiter in zip(clocks, (sync, loop), strict=True):
            clock.now += gap
            limiter.pause(pause)
        sync.acquire(tokens)
        while True:  # the loop driver's way
            slot, delay = loop.reserve(tokens)
            if delay > 0:
                clocks[1].now += delay
                if not loop.stands(slot):
                    continue
            while (start_delay := loop.start_delay(slot)) > 0:
                clocks[1].now += start_delay
            break
        assert clocks[1].now == pytest.approx(clocks[0].now)


def test_reserve_counts_tokens_only_when_given_and_only_with_a_budget() -> None:
    clock = FakeClock()
    budget = RateLimiter(None, tokens_per_minute=600, clock=clock, sleep=clock.sleep)
    assert budget.reserve() == (0.0, 0.0)
    assert budget.reserve() == (0.0, 0.0)  # no tokens asked: the budget is untouched
    no_budget = RateLimiter(4, clock=clock, sleep=clock.sleep, headroom=0)
    assert no_budget.reserve(1_000) == (0.0, 0.0)
    assert no_budget.reserve(1_000) == (0.25, 0.25)  # the rate alone spaces them


def test_headroom_leaves_a_share_of_the_rate_unused() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep, headroom=0.02)
    starts = []
    for _ in range(200):
        limiter.acquire()
        starts.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(starts[30:])]
    assert gaps == pytest.approx([1.02 / 20] * len(gaps))
    assert max_starts_in_window(starts) <= 20


def test_the_first_second_after_an_idle_one_is_spaced_wider() -> None:
    """Fresh connections reach the server later than the next requests: more room then."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep, headroom=0.02)
    limiter.acquire()
    limiter.acquire()
    first_gap = clock.now
    clock.now += 5.0  # idle: the next second is fresh again
    limiter.acquire()
    before = clock.now
    limiter.acquire()
    assert first_gap == pytest.approx(clock.now - before) == pytest.approx(1.04 * 1.02 / 20)
    while clock.now < before + 1.0:  # one second on, the ramp is over
        limiter.acquire()
    start = clock.now
    limiter.acquire()
    assert clock.now - start == pytest.approx(1.02 / 20)


def test_a_caller_that_wakes_late_does_not_start_with_the_next_one() -> None:
    """A stall makes reserved slots pass, and may hold the request started just before it
    until it ends: the callers behind it start one interval apart from the stall's end, as a
    strict server (a sliding window, nginx without burst) requires."""
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            clock.now += 0.4  # the process stalled: this caller wakes 0.4 s late

    limiter = RateLimiter(10, clock=clock, sleep=sleep, headroom=0)
    limiter.acquire()  # t = 0: its request may leave only at 0.5, when the stall ends
    limiter.acquire()  # slot 0.1, wakes at 0.5, and keeps an interval from then
    assert clock.now == pytest.approx(0.6 - JITTER)  # less a sleep's overrun
    limiter.acquire()  # slot 0.2 has passed: it still waits one interval
    assert clock.now == pytest.approx(0.7 - JITTER)
    limiter.acquire()
    assert clock.now == pytest.approx(0.8 - JITTER)


def test_a_stall_is_told_from_when_the_caller_was_due_not_from_its_slot() -> None:
    """Behind a stall the real starts lag the reserved slots: a caller is late only after the
    time the spacing of the real starts gave it, and then it keeps an interval, too."""
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep, headroom=0)
    first, second, third = (limiter.reserve()[0] for _ in range(3))  # 0, 0.1, 0.2
    assert limiter.start_delay(first) == 0
    clock.now = 0.15  # the second wakes 50 ms late: the first's request may leave only now
    assert limiter.start_delay(second) == pytest.approx(0.1 - JITTER)
    clock.now += 0.1 - JITTER
    assert limiter.start_delay(second) == 0  # at 0.25, after the stall
    clock.now = 0.3  # the third: its slot has passed, but it is due only at 0.35
    assert limiter.start_delay(third) == pytest.approx(0.05 - JITTER)
    clock.now += 0.05 - JITTER + 0.05  # and wakes 50 ms after that: a stall again
    assert limiter.start_delay(third) == pytest.approx(0.1 - JITTER)


def test_a_caller_that_overran_its_wait_for_the_spacing_is_not_stalled() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep, headroom=0)
    first, second = (limiter.reserve()[0] for _ in range(2))  # 0 and 0.1
    clock.now = 0.003
    assert limiter.start_delay(first) == 0  # a little late: the spacing counts from 0.001
    clock.now = 0.1
    assert limiter.start_delay(second) == pytest.approx(JITTER)  # due at 0.1005
    clock.now = 0.1005 + STALL * 0.95  # its slot is STALL ago, but it was due only at 0.1005
    assert limiter.start_delay(second) == 0


def test_a_stall_exactly_stall_late_counts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep, headroom=0)
    first, second = (limiter.reserve()[0] for _ in range(2))  # 0 and 0.5
    assert limiter.start_delay(first) == 0
    clock.now = 0.51  # 0.51 - STALL is 0.5 exactly
    assert limiter.start_delay(second) == pytest.approx(0.5 - JITTER)


def test_acquire_reports_every_wait_a_stall_added() -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            clock.now += 0.003  # a little late: the next one is due 0.5 ms after its slot
        if len(clock.sleeps) == 3:
            clock.now += 0.05  # and waiting for that, the process stalls

    limiter = RateLimiter(10, clock=clock, sleep=sleep, headroom=0)
    limiter.acquire()  # t = 0
    limiter.acquire()  # slot 0.1, starts at 0.103
    waited = limiter.acquire()  # slot 0.2, due at 0.2005, wakes at 0.2505: an interval more
    assert waited == pytest.approx(0.097 + JITTER + (0.1 - JITTER))
    assert clock.now == pytest.approx(0.2505 + 0.1 - JITTER)


def test_at_a_high_rate_the_allowances_are_a_share_of_the_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock, sleep=clock.sleep, headroom=0)
    assert limiter.start_delay() == 0  # counted a quarter interval early (LATE is longer)
    assert limiter.start_delay() == pytest.approx(0.001 - 0.00025 - 0.00025)  # less JITTER's
    slot, _ = limiter.reserve()
    clock.now = 0.02  # a stall: an interval from now, less a quarter of it
    assert limiter.start_delay(slot) == pytest.approx(0.001 - 0.00025)


def test_a_rate_set_after_unlimited_starts_is_spaced_from_the_last_of_them() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now = 0.05
    limiter.set_rate(10)
    assert limiter.acquire() == pytest.approx(1.02 / 10 - 0.05 - JITTER)


def test_a_caller_late_by_less_than_a_stall_starts_at_once() -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            clock.now += STALL / 2  # a slow wake, not a stall

    limiter = RateLimiter(10, clock=clock, sleep=sleep, headroom=0)
    limiter.acquire()
    limiter.acquire()
    assert clock.now == pytest.approx(0.1 + STALL / 2)


def test_sleeps_that_overrun_unevenly_do_not_slow_the_rate() -> None:
    """Each overrun is small, but a start that follows a later one must wait again (and overrun
    again): counted at their real times, the overruns would add up start after start."""
    clock = FakeClock()
    overruns = itertools.cycle([0.0, 0.001, 0.0015])

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        clock.now += next(overruns)

    limiter = RateLimiter(20, clock=clock, sleep=sleep, headroom=0)
    starts = []
    for _ in range(1000):
        limiter.acquire()
        starts.append(clock.now)
    assert clock.now <= 999 / 20 + 0.01
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 1 / 20 - JITTER - LATE  # never closer than an overrun allows


def test_the_sent_rate_counts_a_start_exactly_a_window_ago_and_needs_two_instants() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.acquire()
    assert limiter.sent_rate(2.0) is None  # two starts at one instant: no rate
    for now in (1.7, 1.8, 1.9, 2.0):
        clock.now = now
        limiter.acquire()
    assert limiter.sent_rate(2.0) == pytest.approx(5 / 2.0)  # the two at 0 count
    clock.now = 2.0 + 1e-9
    assert limiter.sent_rate(1.0) == pytest.approx(3 / 0.5)  # 1.7 to 2.0: half a window
    clock.now = 20.0
    limiter.acquire()
    clock.now = 20.5
    limiter.acquire()
    assert limiter.sent_rate(1.0) == pytest.approx(1 / 0.5)  # two starts are enough
    limiter.acquire()  # a second start at the last instant
    assert limiter.sent_rate(1.0) == pytest.approx(2 / 0.5)
    clock.now = 30.0
    for _ in range(3):
        limiter.acquire()  # three at one instant, then a later one
    clock.now = 30.5
    limiter.acquire()
    assert limiter.sent_rate(1.0) == pytest.approx(3 / 0.5)


def test_the_wider_spacing_starts_after_exactly_one_idle_second_and_lasts_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter(12, clock=clock, sleep=clock.sleep, headroom=0.5)  # 0.125 s apart
    starts = []
    for _ in range(6):
        limiter.acquire()
        starts.append(clock.now)
    # twice the headroom in the first second: 0.25 apart while the slot is before 1.0
    assert starts == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.125])
    clock.now = 1.25 + 1.0  # exactly one second after the next free slot: fresh again
    limiter.acquire()
    limiter.acquire()
    assert clock.now == pytest.approx(2.25 + 0.25)
    limiter.set_rate(6)
    clock.now = 10.0
    limiter.acquire()  # fresh: twice the headroom, 2 * 0.25 on
    limiter.acquire()
    assert clock.now == pytest.approx(10.5)


def test_the_sent_rate_is_measured_from_the_real_starts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep, headroom=0)
    assert limiter.sent_rate(2.0) is None  # nothing sent yet
    for _ in range(30):
        limiter.acquire()
    assert limiter.sent_rate(2.0) == pytest.approx(10)
    clock.now += 0.5  # a spell without starts: the rate while sending is what counts
    assert limiter.sent_rate(2.0) == pytest.approx(10)
    unlimited = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        unlimited.acquire()
        clock.now += 0.25
    assert unlimited.sent_rate(2.0) == pytest.approx(2 / 1.0)  # two gaps over half the window


def test_a_small_overrun_of_a_sleep_does_not_push_the_schedule() -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            clock.now += JITTER / 2  # woke a little late

    limiter = RateLimiter(10, clock=clock, sleep=sleep, headroom=0)
    limiter.acquire()
    limiter.acquire()
    assert clock.now == pytest.approx(0.1 + JITTER / 2)
    limiter.acquire()
    assert clock.now == pytest.approx(0.2)  # its own slot: the overrun is not carried on


def test_a_headroom_outside_zero_to_one_is_refused() -> None:
    for headroom in (-0.1, 1.0):
        with pytest.raises(ValueError, match="headroom"):
            RateLimiter(10, headroom=headroom)
