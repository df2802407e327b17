"""The built-in client's calls run as coroutines on one event-loop thread; custom synchronous
clients keep a thread per call in flight."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from aita.engine import LLMMessage, LLMResponse, RateLimiter, create_openrouter_client
from tests.support.doubles import (
    ROOT,
    SimulatorFactory,
    assert_own_answers_in_order,
    client_for,
    executor_for,
    max_starts_in_window,
    questions,
)


def worker_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("aita-worker")}


def test_hundreds_of_calls_in_flight_share_one_thread(simulator: SimulatorFactory) -> None:
    sim = simulator(latency=1.0)
    seen: list[set[str]] = []
    executor = executor_for(client_for(sim), max_workers=100, enable_checkpointing=False)
    batch = executor.execute_batch(
        questions(100), on_task_complete=lambda _: seen.append(worker_threads())
    )
    assert_own_answers_in_order(batch.task_results)
    # Many at once from one thread (how many the threaded simulator accepts at once varies).
    assert sim.stats.max_in_flight > 20
    assert set().union(*seen) == {"aita-worker-loop"}


def test_a_custom_client_keeps_its_threads(simulator: SimulatorFactory) -> None:
    inner = client_for(simulator())
    names: set[str] = set()

    class Wrapped:  # synchronous only, as users write them
        def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
            names.add(threading.current_thread().name)
            return inner.complete(messages, **params)

    batch = executor_for(Wrapped(), max_workers=4).execute_batch(questions(20))
    assert_own_answers_in_order(batch.task_results)
    assert names and all(name.startswith("aita-worker-") for name in names)
    assert "aita-worker-loop" not in names


def test_the_rate_limit_holds_on_the_loop(simulator: SimulatorFactory) -> None:
    starts: list[float] = []

    def arrived(request: dict[str, Any]) -> None:
        starts.append(time.monotonic())  # as the server sees them

    sim = simulator(rate_limit=20, responder=arrived)  # twice the client's rate: no 429
    executor = executor_for(client_for(sim), max_workers=50, rate_limit=10)
    batch = executor.execute_batch(questions(20))
    assert_own_answers_in_order(batch.task_results)
    assert sim.stats.by_status[429] == 0
    assert max_starts_in_window(starts) <= 12  # 10 a second, give or take the network's jitter


def test_a_limiter_of_the_callers_own_waits_its_own_way(simulator: SimulatorFactory) -> None:
    waits: list[int] = []

    class Counting(RateLimiter):
        def acquire(self, tokens: int = 0) -> float:
            waits.append(tokens)
            return super().acquire(tokens)

    sim = simulator()
    executor = executor_for(client_for(sim), max_workers=20, rate_limiter=Counting(None))
    batch = executor.execute_batch(questions(25))
    assert_own_answers_in_order(batch.task_results)
    assert len(waits) == 25  # every call went through the caller's limiter


FILES = """
import resource, sys
from aita.engine._http import connections_for
soft, hard = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(connections_for(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_thousands_in_flight_make_room_for_their_connections() -> None:
    def run(soft: int, hard: int) -> list[int]:
        done = subprocess.run(
            [sys.executable, "-c", FILES, str(soft), str(hard)],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        return [int(n) for n in done.stdout.split()]

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard >= 2000:
        assert run(256, 2000) == [1000, 1064]  # the soft limit raised to make room
    assert run(256, 256) == [192, 256]  # no room to make: fewer calls in flight, none failing


def test_the_proxy_comes_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    far = create_openrouter_client(api_key="x", base_url="https://provider.invalid/v1")
    near = create_openrouter_client(api_key="x", base_url="http://127.0.0.1:9/v1")
    assert far.http._proxy == "http://proxy.invalid:3128"
    assert near.http._proxy is None
