"""One rate limit shared through a real Redis: the local limiter's guarantees, across instances.

Most tests give every instance the same fake clock (sent to Redis in place of its ``TIME``), so
the shared schedule is checked exactly and instantly; a few use real time with generous bounds.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aita.engine import (
    ConfigError,
    RateLimiter,
    RedisRateLimiter,
    create_openrouter_client,
    default_limit_name,
)
from tests.support.doubles import (
    FakeClock,
    SimulatorFactory,
    assert_own_answers_in_order,
    client_for,
    executor_for,
    max_starts_in_window,
    questions,
    tokens_in_window,
)
from tests.support.redis_server import REDIS_SERVER, RedisServer, redis_server

real_server = pytest.mark.real_server
__all__ = ["redis_server"]  # the fixture, imported so that pytest finds it


def shared(server: RedisServer, rate: float | None, **kwargs: Any) -> RedisRateLimiter:
    kwargs.setdefault("name", "test-limit")
    kwargs.setdefault("headroom", 0)  # starts exactly 1/rate apart, for exact checks
    return RedisRateLimiter(rate, redis_url=server.url, **kwargs)


def on_fake_clock(
    server: RedisServer, rate: float | None, count: int = 2, **kwargs: Any
) -> tuple[FakeClock, list[RedisRateLimiter]]:
    clock = FakeClock()
    return clock, [
        shared(server, rate, clock=clock, sleep=clock.sleep, **kwargs) for _ in range(count)
    ]


# -- the schedule ---------------------------------------------------------------------------------


@real_server
def test_two_instances_sharing_a_name_hold_no_window_above_the_rate_and_sustain_it(
    redis_server: RedisServer,
) -> None:
    clock, limiters = on_fake_clock(redis_server, 20)
    pick = random.Random(7)
    starts = []
    for _ in range(400):
        pick.choice(limiters).acquire()
        starts.append(clock.now)
    assert max_starts_in_window(starts) <= 20
    assert 400 / clock.now >= 0.97 * 20


@real_server
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rate=st.integers(min_value=1, max_value=50),
    arrivals=st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.5), st.integers(0, 2)),
        min_size=1,
        max_size=150,
    ),
)
def test_random_arrivals_at_three_instances_hold_the_rate(
    redis_server: RedisServer, rate: int, arrivals: list[tuple[float, int]]
) -> None:
    clock, limiters = on_fake_clock(redis_server, rate, count=3, name=uuid.uuid4().hex)
    starts = []
    for gap, which in arrivals:
        clock.now += gap
        limiters[which].acquire()
        starts.append(clock.now)
    assert max_starts_in_window(starts) <= rate


@real_server
def test_instances_in_threads_on_redis_time_space_their_starts(redis_server: RedisServer) -> None:
    """Real time: starts can only be late, so the bounds allow for a loaded machine."""
    starts: list[float] = []
    lock = threading.Lock()

    def work(limiter: RedisRateLimiter) -> None:
        for _ in range(15):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [
        threading.Thread(target=work, args=(shared(redis_server, 20),))
        for _ in range(2)
        for _ in range(2)  # two instances, two threads each
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    assert len(starts) == 60
    assert all(starts[i + 20] - starts[i] >= 1.0 - 0.3 for i in range(len(starts) - 20))
    assert 59 / 20 - 0.3 <= starts[-1] - starts[0] <= 59 / 20 + 1.5  # R is sustained


@real_server
def test_a_vanished_instance_leaves_only_the_slots_it_reserved(redis_server: RedisServer) -> None:
    clock = FakeClock()
    doomed = shared(redis_server, 20, clock=clock, sleep=lambda seconds: None)
    for _ in range(8):  # eight workers hold a slot each, then the process is killed
        doomed.acquire()
    doomed.close()
    survivor = shared(redis_server, 20, clock=clock, sleep=clock.sleep)
    assert survivor.acquire() == pytest.approx(8 / 20)  # the dead process's slots pass...
    assert survivor.acquire() == pytest.approx(1 / 20)  # ...and the full rate goes on
    ttl = redis_server.client().pttl("aita:limit:test-limit")
    assert 0 < ttl <= 60_000 + 1_000  # nothing outlives the idle time: no lease to clean up


# -- pauses, rates and tokens, shared -------------------------------------------------------------


@real_server
def test_pause_from_one_instance_holds_the_other(redis_server: RedisServer) -> None:
    _, (refused, other) = on_fake_clock(redis_server, None)
    refused.pause(2.5)
    assert other.acquire() == pytest.approx(2.5)
    assert other.acquire() == 0.0  # unlimited again after the pause


@real_server
def test_pause_during_a_sleep_moves_the_sleeper_behind_it(redis_server: RedisServer) -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:  # a 429 in another process while this caller sleeps
            refused.pause(3.0)

    refused = shared(redis_server, 1, clock=clock, sleep=clock.sleep)
    sleeper = shared(redis_server, 1, clock=clock, sleep=sleep)
    sleeper.acquire()
    sleeper.acquire()
    assert clock.now >= 1.0 + 3.0


@real_server
def test_set_rate_is_shared_and_read_back_with_the_next_slot(redis_server: RedisServer) -> None:
    _, (adapting, other) = on_fake_clock(redis_server, 20)
    adapting.set_rate(5)
    assert other.rate == 20  # not read yet: no extra round trip for it
    other.acquire()
    assert other.rate == 5
    assert other.acquire() == pytest.approx(1 / 5)


@real_server
def test_a_raise_waits_for_the_hold_after_any_change_but_a_cut_does_not(
    redis_server: RedisServer,
) -> None:
    clock, (first, second) = on_fake_clock(redis_server, 20, raise_hold=2.0)
    first.set_rate(10)  # a 429 in one process
    second.set_rate(20)  # another recovers at once: too soon, the shared rate stays
    assert second.rate == 10
    second.set_rate(7)  # a cut always applies
    assert first.acquire() == 0.0 and first.rate == 7
    clock.now += 2.0
    second.set_rate(9)
    assert second.rate == 9


@real_server
def test_token_budget_is_shared(redis_server: RedisServer) -> None:
    clock, limiters = on_fake_clock(redis_server, None, tokens_per_minute=6000)
    starts = []
    for i in range(300):
        limiters[i % 2].acquire(tokens=100)
        starts.append((clock.now, 100))
    assert tokens_in_window(starts, 60.0) <= 6000 + 100
    assert 300 * 100 / clock.now >= 0.97 * 100


@real_server
def test_unused_tokens_given_back_by_one_instance_serve_another(redis_server: RedisServer) -> None:
    clock, (first, second) = on_fake_clock(redis_server, None, tokens_per_minute=60_000)
    first.acquire(tokens=5000)
    first.correct(tokens=-4000)  # the call used 1,000 of the 5,000 reserved
    second.acquire(tokens=1000)
    assert clock.now == pytest.approx(1.0)


@real_server
def test_different_names_are_different_limits(redis_server: RedisServer) -> None:
    clock = FakeClock()
    one = shared(redis_server, 1, name="a", clock=clock, sleep=clock.sleep)
    two = shared(redis_server, 1, name="b", clock=clock, sleep=clock.sleep)
    assert one.acquire() == 0.0
    assert two.acquire() == 0.0


# -- a drop-in for the executor, and Redis going away ---------------------------------------------


@real_server
def test_an_instance_that_stalled_past_its_slot_takes_the_next_free_one(
    redis_server: RedisServer,
) -> None:
    """Sent late, its request would arrive with the other instances' next ones: it leaves its
    slot unused and takes the next free one."""
    clock = FakeClock()

    def stalling(seconds: float) -> None:
        clock.sleep(seconds)
        clock.now += 0.3  # this instance's process stalls at every wake

    on_time = shared(redis_server, 10, clock=clock, sleep=clock.sleep)
    late = shared(redis_server, 10, clock=clock, sleep=stalling)
    on_time.acquire()  # t = 0
    late.acquire()  # slot 0.1, wakes at 0.4: starts in the next free slot, 0.4 (no wait)
    assert clock.now == pytest.approx(0.4)
    on_time.acquire()  # not at once (slot 0.2 was never used): after the late start
    assert clock.now == pytest.approx(0.5)
    assert late.sent_rate(5.0) is None  # one start of its own: no rate yet


@real_server
def test_each_instance_measures_what_it_sent_itself(redis_server: RedisServer) -> None:
    """Adaptive control compares what the provider accepted of this process's requests with
    what this process sent, not with the rate all of them share."""
    _, (one, two) = on_fake_clock(redis_server, 20)
    for _ in range(20):
        one.acquire()
        two.acquire()
        two.acquire()
    assert one.sent_rate(5.0) == pytest.approx(20 / 3, rel=0.1)
    assert two.sent_rate(5.0) == pytest.approx(2 * 20 / 3, rel=0.1)


@real_server
def test_executor_and_adaptive_rate_run_on_the_shared_limiter(
    redis_server: RedisServer, simulator: SimulatorFactory
) -> None:
    sim = simulator(rate_limit=20)
    limiter = shared(redis_server, 30)  # configured too high: the provider's header caps it
    result = executor_for(client_for(sim), max_workers=8, rate_limiter=limiter).execute_batch(
        questions(40)
    )
    assert_own_answers_in_order(result.task_results)
    assert isinstance(limiter, RateLimiter)
    assert limiter.rate is not None and limiter.rate <= 0.97 * 20 + 1e-9  # capped, and shared:
    assert redis_server.client().hget("aita:limit:test-limit", "rate") == repr(limiter.rate)


@real_server
def test_redis_stopped_mid_run_the_batch_finishes_on_the_local_limiter_with_one_warning(
    redis_server: RedisServer, simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = simulator(latency=0.02)
    limiter = shared(redis_server, 20)
    executor = executor_for(client_for(sim), max_workers=8, rate_limiter=limiter)
    threading.Timer(1.0, redis_server.stop).start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="aita"):
        result = executor.execute_batch(questions(60))
    assert_own_answers_in_order(result.task_results)
    assert not limiter.shared
    assert time.monotonic() - started >= 59 / 20 - 0.2  # still paced at the rate
    warnings = [r.getMessage() for r in caplog.records if "Redis" in r.getMessage()]
    assert len(warnings) == 1 and "paces alone at 20" in warnings[0]


@real_server
def test_redis_lost_the_process_goes_on_locally_after_the_slots_it_had_reserved(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    limiter = shared(redis_server, 20, clock=clock, sleep=lambda seconds: None)
    for _ in range(4):  # four workers asleep until their slots: 0, 0.05, 0.10, 0.15
        limiter.acquire()
    redis_server.stop()
    assert limiter.acquire() == pytest.approx(4 / 20)  # no burst on the way to local pacing
    assert not limiter.shared


@real_server
def test_redis_lost_warning_and_errors_hide_the_password(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert REDIS_SERVER is not None
    server = RedisServer(tmp_path / "locked", password="hunter2-not-real")
    try:
        url = f"redis://:hunter2-not-real@127.0.0.1:{server.port}/0"
        with pytest.raises(ConfigError) as refused:
            RedisRateLimiter(20, redis_url=url.replace("hunter2", "wrong"), name="x")
        assert "not-real" not in str(refused.value) and "***@127.0.0.1" in str(refused.value)
        limiter = RedisRateLimiter(20, redis_url=url, name="x")
        assert "hunter2" not in repr(limiter)
    finally:
        server.stop()
    with caplog.at_level(logging.WARNING, logger="aita"):
        limiter.acquire()
    assert not limiter.shared
    assert caplog.records and all("hunter2" not in r.getMessage() for r in caplog.records)


# -- without a server -----------------------------------------------------------------------------


def test_unreachable_redis_is_a_config_error_naming_the_url_without_its_password() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError) as refused:
        RedisRateLimiter(20, redis_url=f"redis://:s3cret-pw@127.0.0.1:{port}/0", name="x")
    message = str(refused.value)
    assert message.startswith("AITA_REDIS_URL: ")
    assert f"redis://***@127.0.0.1:{port}/0" in message and "s3cret" not in message


def test_a_malformed_redis_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="AITA_REDIS_URL"):
        RedisRateLimiter(20, redis_url="http://:s3cret@example/0", name="x")


def test_default_limit_name_is_the_base_url_and_model_without_credentials() -> None:
    client = create_openrouter_client(
        api_key="sk-test", base_url="https://user:pw@llm.example/v1/?key=k", model="m/one"
    )
    assert default_limit_name(client) == "https://llm.example/v1 m/one"


# -- values someone else wrote ---------------------------------------------------------------------


@real_server
@pytest.mark.parametrize(
    ("field", "value"),
    [("paused", "far"), ("rate", "0.001"), ("next", "far"), ("rate", "garbage"), ("rate", "inf")],
    ids=["paused in a year", "rate 0.001", "next slot in a year", "rate garbage", "rate inf"],
)
def test_shared_values_no_aita_writes_are_refused_with_one_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, field: str, value: str
) -> None:
    """A pause a year ahead or a rate of 0.001/s in the hash would stall every process without a
    word: the process warns once, naming the limit, and paces alone at its own rate."""
    import redis

    clock, (limiter,) = on_fake_clock(redis_server, 20, count=1)
    limiter.acquire()
    if value == "far":
        value = repr((clock.now + 365 * 86400) * 1_000_000)
    redis.Redis.from_url(redis_server.url).hset("aita:limit:test-limit", field, value)
    started = clock.now
    with caplog.at_level(logging.WARNING, logger="aita.executor"):
        for _ in range(10):
            limiter.acquire()
    assert clock.now - started <= 10 / 20 + 0.01  # paced at its own 20/s, not stalled
    assert not limiter.shared
    warnings = [r.getMessage() for r in caplog.records if "aita never writes" in r.getMessage()]
    assert len(warnings) == 1 and "test-limit" in warnings[0]
