"""Token budgets and adaptive rate control, with an injected clock; one end-to-end run."""

from __future__ import annotations

import pytest

from aita.engine import AdaptiveRate, RateLimiter
from aita.errors import RateLimited
from tests.support.doubles import (
    FakeClock,
    SimulatorFactory,
    assert_own_answers_in_order,
    client_for,
    executor_for,
    questions,
    tokens_in_window,
)


def test_token_budget_holds_per_minute() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, tokens_per_minute=6000, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(300):
        limiter.acquire(tokens=100)
        starts.append((clock.now, 100))
    assert tokens_in_window(starts, 60.0) <= 6000 + 100
    assert 300 * 100 / clock.now >= 0.97 * 100  # sustains the budget: 100 tokens/s


def test_unused_tokens_are_given_back() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, tokens_per_minute=60_000, clock=clock, sleep=clock.sleep)
    limiter.acquire(tokens=5000)
    limiter.correct(tokens=-4000)  # the call used 1,000 of the 5,000 reserved
    limiter.acquire(tokens=1000)
    assert clock.now == pytest.approx(1.0)


def test_the_limit_header_caps_a_misconfigured_rate_once_the_provider_refuses() -> None:
    clock = FakeClock()
    limiter = RateLimiter(30, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 30, clock=clock)
    headers = {"x-ratelimit-limit-requests": "900"}  # per minute: 15/s
    for _ in range(20):  # what the provider accepts of the 30/s sent: 15/s
        clock.now += 1 / 15
        control.on_response(headers)
    assert limiter.rate == 30  # a header alone is a hint, not an order
    control.on_rate_limited(RateLimited("slow", status_code=429, headers=headers), 0.1)
    assert limiter.rate == pytest.approx(AdaptiveRate.SAFETY * 15)
    rates = []
    for _ in range(5):
        clock.now += AdaptiveRate.RECOVERY_SECONDS + 0.01
        control.on_response(headers)
        rates.append(limiter.rate or 0.0)
    assert rates[0] <= 15  # back over the limit only by probing, in steps that double
    steps = [b - a for a, b in zip([AdaptiveRate.SAFETY * 15, *rates], rates, strict=False)]
    assert steps == pytest.approx([0.3 * 2**i for i in range(5)])


@pytest.mark.parametrize(
    "value",
    ["20", str(20 * 86400), "0", "-5", "garbage", "nan", "inf", ""],
    ids=["per second", "per day", "zero", "negative", "garbage", "nan", "inf", "empty"],
)
def test_a_limit_header_never_slows_a_client_the_provider_accepts(value: str) -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 20, clock=clock)
    for _ in range(200):
        clock.now += 0.05
        control.on_response({"x-ratelimit-limit-requests": value})
    assert limiter.rate == 20


def test_at_a_429_a_per_second_header_never_caps_below_the_accepted_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(30, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 30, clock=clock)
    headers = {"x-ratelimit-limit-requests": "20"}  # 20 per *second*, read as 0.33/s
    for _ in range(60):  # two seconds of answers at the provider's 20/s
        clock.now += 0.05
        control.on_response(headers)
    control.on_rate_limited(RateLimited("slow", status_code=429, headers=headers), 0.05)
    assert limiter.rate is not None and limiter.rate >= 0.7 * 20
    assert control.provider_cap is not None and control.provider_cap >= 0.9 * 20


def test_an_implausible_hint_before_a_second_of_answers_steps_down_a_little() -> None:
    clock = FakeClock()
    limiter = RateLimiter(30, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 30, clock=clock)
    clock.now += 0.05
    control.on_response({"x-ratelimit-limit-requests": "20"})
    control.on_rate_limited(RateLimited("slow", status_code=429), 0.05)  # 50 ms in: no measure
    assert limiter.rate == pytest.approx(30 * AdaptiveRate.SAFETY)
    assert control.provider_cap is None  # nothing learned from it


def test_a_plausible_hint_sets_the_rate_at_the_first_refusal() -> None:
    clock = FakeClock()
    limiter = RateLimiter(30, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 30, clock=clock)
    headers = {"x-ratelimit-limit-requests": "900"}  # per minute: 15/s, below the 30 refused
    clock.now += 0.05
    control.on_response(headers)
    control.on_rate_limited(RateLimited("slow", status_code=429, headers=headers), 0.05)
    assert limiter.rate == pytest.approx(15 * AdaptiveRate.SAFETY)


@pytest.mark.parametrize(
    "value",
    ["20", str(20 * 86400), "0", "0.000001", "garbage"],
    ids=["per second", "per day", "zero", "tiny", "garbage"],
)
def test_at_a_refusal_at_the_limit_no_header_cuts_deeper_than_the_edge(value: str) -> None:
    """A strict server refuses a request now and then at its limit; whatever its header says,
    the rate stays within a few percent of what it accepts."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 20, clock=clock)
    headers = {"x-ratelimit-limit-requests": value}
    for _ in range(60):
        clock.now += 0.05
        control.on_response(headers)
    control.on_rate_limited(RateLimited("slow", status_code=429, headers=headers), 0.05)
    assert limiter.rate == pytest.approx(20 * AdaptiveRate.SAFETY)


def test_an_isolated_refusal_is_recovered_from_within_five_seconds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 20, clock=clock)
    for _ in range(100):
        clock.now += 0.05
        control.on_response({})
    refused_at = clock.now
    control.on_rate_limited(RateLimited("slow", status_code=429, retry_after=1.0), 1.0)
    assert limiter.rate is not None and limiter.rate >= 0.95 * 20
    while clock.now < refused_at + 5.0:
        clock.now += 0.05
        control.on_response({})
    assert limiter.rate == 20


def test_a_refusal_of_nearly_all_that_was_sent_is_at_the_edge_however_little_that_was() -> None:
    """A process that sent less than its rate (it stalled, or it sends a third of a limit
    shared with two others) and was refused one request of many is at the limit's edge: it
    must not learn what it sent as the limit (a cut of up to 30%)."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 20, clock=clock)
    for _ in range(40):  # 14/s sent, all accepted
        clock.now += 1 / 14
        limiter.acquire()
        control.on_response({})
    control.on_rate_limited(RateLimited("slow", status_code=429), 0.05)
    assert limiter.rate == pytest.approx(20 * AdaptiveRate.SAFETY)
    assert control.provider_cap == pytest.approx(20)


def test_long_pauses_in_the_window_leave_the_judgement_to_the_rate_set() -> None:
    """A server that asks for long pauses (a sliding window far over its limit) accepts all
    that is sent, because little is: the rate it accepted is what it allows."""
    clock = FakeClock()
    limiter = RateLimiter(30, clock=clock, sleep=clock.sleep, headroom=0)
    control = AdaptiveRate(limiter, 30, clock=clock)
    for _ in range(3):  # 15 at 30/s, then a refusal asking for the rest of the second
        for _ in range(15):
            limiter.acquire()
            clock.now += 0.001
            control.on_response({})
        refused = RateLimited("slow", status_code=429, retry_after=0.5)
        control.on_rate_limited(refused, 0.5)
        clock.now += 0.5
    assert limiter.rate is not None and limiter.rate <= 0.7 * 30


def test_below_the_stated_limit_a_second_refusal_learns_from_what_was_accepted() -> None:
    """A key's limit may be shared with other clients: refused again below the limit it
    states, a process learns its share from what the provider accepted of it."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 20, clock=clock)
    headers = {"x-ratelimit-limit-requests": "1200"}  # per minute: 20/s, for the whole key
    for _ in range(40):  # a third of what it sends is accepted: two other clients use the rest
        for _ in range(3):
            limiter.acquire()
        control.on_response(headers)
    refused = RateLimited("slow", status_code=429, headers=headers)
    control.on_rate_limited(refused, 0.05)
    assert limiter.rate == pytest.approx(20 * AdaptiveRate.SAFETY)  # as stated, the first time
    for _ in range(6):
        for _ in range(3):
            limiter.acquire()
        control.on_response(headers)
    control.on_rate_limited(refused, 0.05)
    assert limiter.rate is not None and limiter.rate <= 0.7 * 20


def test_far_above_the_limit_the_rate_learned_is_what_the_provider_accepted() -> None:
    clock = FakeClock()
    limiter = RateLimiter(40, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 40, clock=clock)
    for _ in range(90):  # it accepts 30/s of the 40/s sent
        clock.now += 1 / 30
        control.on_response({})
    control.on_rate_limited(RateLimited("slow", status_code=429), 0.5)
    assert limiter.rate == pytest.approx(30 * AdaptiveRate.SAFETY, rel=0.03)
    assert control.provider_cap == pytest.approx(30, rel=0.03)


def test_a_refusal_without_retry_after_pauses_one_interval_not_the_backoff() -> None:
    """nginx's limit_req refuses what arrives too close and says nothing of when: the next
    request is admitted one interval later, and a half-second backoff for every worker would
    waste ten of them."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep, headroom=0)
    control = AdaptiveRate(limiter, 20, clock=clock)
    limiter.acquire()
    control.on_rate_limited(RateLimited("slow", status_code=429), 0.5)  # 0.5: the backoff
    limiter.acquire()
    assert clock.now <= 1.5 / 20


def test_429_pauses_and_slows_once_then_recovers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, 20, clock=clock)
    refused = RateLimited("slow down", status_code=429, retry_after=0.5)
    control.on_rate_limited(refused, 0.5)
    control.on_rate_limited(refused, 0.5)  # a request that was already in flight
    assert limiter.rate == pytest.approx(20 * AdaptiveRate.SAFETY)
    limiter.acquire()
    assert clock.now == pytest.approx(0.5)  # everyone waited out the retry-after
    rates: list[float] = []
    for _ in range(10):
        clock.now += AdaptiveRate.RECOVERY_SECONDS
        control.on_response({"x-test": "1"})
        rates.append(limiter.rate or 0.0)
    assert rates == sorted(rates) and rates[-1] == pytest.approx(20)


def test_unlimited_client_learns_a_rate_from_a_429() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    control = AdaptiveRate(limiter, None, clock=clock)
    for _ in range(10):
        clock.now += 0.1
        control.on_response({"x-test": "1"})
    control.on_rate_limited(RateLimited("no", status_code=429), 0.1)
    assert limiter.rate is not None and limiter.rate < 10
    for _ in range(10):
        clock.now += AdaptiveRate.RECOVERY_SECONDS
        control.on_response({"x-test": "1"})
    assert limiter.rate is None  # recovered: unlimited again


@pytest.mark.slow
def test_client_set_too_fast_still_finishes_every_task_without_hammering(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator(rate_limit=15, latency=0.05)
    executor = executor_for(client_for(sim), max_workers=12, rate_limit=30, max_retries=8)
    result = executor.execute_batch(questions(90))
    assert_own_answers_in_order(result.task_results)
    assert sim.stats.requests <= 1.2 * 90
