"""``max_workers="auto"``: the limit on calls in flight, on a fake clock, and end to end."""

from __future__ import annotations

import heapq
import random
import statistics
import threading
from collections import Counter, deque

import pytest

from aita.engine import ConcurrencyLimit, ParallelLLMExecutor
from aita.errors import ProviderTimeout
from tests.support.doubles import (
    FakeClock,
    SimulatorFactory,
    assert_own_answers_in_order,
    client_for,
    questions,
)


def serve(limit: ConcurrencyLimit, slots: int, service: float, rounds: int) -> list[int]:
    """A server with ``slots`` slots of ``service`` seconds each, kept full by the limit: each
    round, ``limit.limit`` calls in flight, each of which takes, as in a steady flow (Little's
    law), ``service`` times the calls per slot when there are more calls than slots. Returns the
    limit after each round."""
    seen = []
    for _ in range(rounds):
        calls = limit.limit
        for _ in range(calls):
            assert limit.acquire()
        for _ in range(calls):
            limit.release(service * max(1.0, calls / slots))
        seen.append(limit.limit)
    return seen


@pytest.mark.parametrize("slots", [1, 2, 4, 8, 32])
def test_the_limit_settles_at_the_slots_or_one_above(slots: int) -> None:
    limit = ConcurrencyLimit(clock=FakeClock())
    seen = serve(limit, slots, 0.2, 60)
    assert all(slots <= n <= slots + 1 for n in seen[-20:]), seen


def test_it_follows_a_server_that_gained_slots_and_one_that_lost_them() -> None:
    limit = ConcurrencyLimit(clock=FakeClock())
    assert serve(limit, 4, 0.2, 40)[-1] in (4, 5)
    assert serve(limit, 8, 0.2, 60)[-1] in (8, 9)
    assert serve(limit, 2, 0.2, 60)[-1] in (2, 3)


def test_a_server_slower_for_everyone_is_not_mistaken_for_a_queue() -> None:
    """Another client's load doubles every call's time: fewer calls in flight would not make
    them shorter, so the limit stays at the slots instead of collapsing."""
    limit = ConcurrencyLimit(clock=FakeClock())
    serve(limit, 4, 0.2, 40)
    seen = serve(limit, 4, 0.4, 40)
    assert all(4 <= n <= 5 for n in seen[-20:]), seen


def test_answers_of_different_lengths_are_not_mistaken_for_a_queue() -> None:
    """A real model's answers differ in length: one short answer among the others is not the
    unloaded latency, or every window would look queued and the limit would fall to one."""
    limit = ConcurrencyLimit(clock=FakeClock())
    seen, answered = [], 0
    for _ in range(60):
        calls = limit.limit
        for _ in range(calls):
            assert limit.acquire()
        for _ in range(calls):
            answered += 1
            service = 0.02 if answered % 5 == 0 else 0.2  # one in five answers at once
            limit.release(service * max(1.0, calls / 4))
        seen.append(limit.limit)
    assert all(4 <= n <= 5 for n in seen[-20:]), seen


@pytest.mark.parametrize("slots", [2, 4])
def test_slots_decoded_together_are_not_mistaken_for_a_queue(slots: int) -> None:
    """llama.cpp's continuous batching on CPU: the calls in its slots share the processor, so
    each answer takes longer the more slots are busy (two: 1.5 times as long) although
    together they answer more. Latency alone reads that as a queue and keeps the limit under
    the slots; the throughput it bought says it is none."""
    limit = ConcurrencyLimit(clock=FakeClock())
    seen = []
    for _ in range(80):
        calls = limit.limit
        for _ in range(calls):
            assert limit.acquire()
        busy = min(calls, slots)
        for _ in range(calls):
            limit.release(0.2 * (1 + 0.5 * (busy - 1) / (slots - 1)) * max(1.0, calls / slots))
        seen.append(limit.limit)
    assert all(slots <= n <= slots + 1 for n in seen[-30:]), seen


def queue_server(
    limit: ConcurrencyLimit, slots: int, shared: float, answers: int, seed: int
) -> list[tuple[int, float]]:
    """A server with ``slots`` slots and a first-come queue, in simulated time, kept busy by
    the limit: a call starts whenever fewer than ``limit.limit`` are in flight, as worker
    threads do. A call alone in the server takes 0.2 s; one that starts with ``n`` slots busy
    takes ``1 + (shared - 1) * (n - 1) / (slots - 1)`` times as long (slots that share a
    processor), and each answer's length varies by a fifth either way. Returns the limit
    and the time in the server (queue included) of each answer, in the order they end."""
    rng = random.Random(seed)
    now, busy, started, order = 0.0, 0, 0, 0
    ends: list[tuple[float, int, float]] = []  # (when it ends, order, when it was sent)
    queue: deque[float] = deque()
    answered: list[tuple[int, float]] = []

    def serve(sent: float) -> None:
        nonlocal busy, order
        busy += 1
        order += 1
        factor = 1 + (shared - 1) * (busy - 1) / max(1, slots - 1)
        heapq.heappush(ends, (now + 0.2 * factor * rng.uniform(0.8, 1.2), order, sent))

    def send() -> None:
        nonlocal started
        while limit.in_flight < limit.limit and started < answers:
            assert limit.acquire()
            started += 1
            if busy < slots:
                serve(now)
            else:
                queue.append(now)

    send()
    while ends:
        now, _, sent = heapq.heappop(ends)
        busy -= 1
        limit.release(now - sent)
        answered.append((limit.limit, now - sent))
        if queue:
            serve(queue.popleft())
        send()
    return answered


@pytest.mark.parametrize(("slots", "shared"), [(2, 1.5), (4, 1.0), (4, 1.8), (8, 1.0)])
@pytest.mark.parametrize("seed", [1, 2])
def test_calls_that_overlap_in_a_queue_mostly_wait_at_the_slots(
    slots: int, shared: float, seed: int
) -> None:
    """Calls start as others end, answers differ in length, and after a change of limit the
    server still holds the calls of the limit before. The limit spends most answers at the
    slots (a probe one above puts its calls in the server's queue, so probes that found one
    come less and less often), and one noisy window after a step down is not taken for a
    server that became slower for everyone (which sent the limit up for good)."""
    answered = queue_server(ConcurrencyLimit(clock=FakeClock()), slots, shared, 3000, seed)
    settled = Counter(limit for limit, _ in answered[500:])
    assert settled[slots] >= 0.65 * 2500, settled
    assert sum(n for limit, n in settled.items() if limit > slots + 1) <= 0.1 * 2500, settled
    alone = statistics.median(seconds for _, seconds in answered[500:]) / 0.2
    assert alone <= shared * 1.1, alone


def test_a_timeout_shrinks_the_limit() -> None:
    limit = ConcurrencyLimit(8, clock=FakeClock())
    with pytest.raises(ProviderTimeout), limit.slot():
        raise ProviderTimeout("timed out")
    assert limit.limit == 6
    assert limit.in_flight == 0


def test_calls_beyond_the_limit_wait_for_a_place() -> None:
    limit = ConcurrencyLimit(1, clock=FakeClock())
    assert limit.acquire()
    stop = threading.Event()
    stop.set()
    assert not limit.acquire(stop)  # full: a stopped batch does not wait
    limit.release(0.1)
    assert limit.acquire(stop)


def test_limits_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="minimum"):
        ConcurrencyLimit(0)
    with pytest.raises(ValueError, match="minimum"):
        ConcurrencyLimit(10, maximum=4)


@pytest.mark.slow
def test_auto_workers_fill_a_server_with_slots_without_queueing_in_it(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator(latency=0.2, concurrency=3)
    executor = ParallelLLMExecutor(
        client_for(sim), max_workers="auto", rate_limit=None, enable_checkpointing=False,
        show_progress=False,
    )  # fmt: skip
    result = executor.execute_batch(questions(60))
    assert_own_answers_in_order(result.task_results)
    # 64 workers would keep 64 calls in the server, each waiting 20 service times; the limit
    # keeps a few (its slow start may overshoot to twice the slots, once)
    assert sim.stats.max_in_flight <= 4 * 3
    assert statistics.median(sim.stats.seconds_in_server) < 0.2 * 2


def test_workers_on_the_command_line_are_a_count_or_auto() -> None:
    import argparse

    from aita.cli._types import workers_count

    assert workers_count("auto") == "auto"
    assert workers_count("AUTO") == "auto"
    assert workers_count("8") == 8
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        workers_count("0")
