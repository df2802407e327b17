"""``--workers auto`` against llama.cpp's own server with two slots (``llama-server --parallel
2``, continuous batching): the limit it settles at and what it answers, next to two fixed
workers in the same test. The bounds are loose on purpose: the server, aita and whatever else
runs share the machine's cores, so figures belong in ``benchmarks/workers.py``."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from aita.engine import ConcurrencyLimit, SimpleLLMTask, create_openrouter_client
from tests.support.doubles import executor_for
from tests.support.llama_server import missing_parallel, running_llama_server

pytestmark = [pytest.mark.real_server, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_slots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of ``llama-server --parallel 2`` with SmolLM2-135M."""
    if problem := missing_parallel():
        pytest.skip(problem)
    folder: Path = tmp_path_factory.mktemp("llama-parallel")
    with running_llama_server(folder, parallel=2) as base_url:
        answers_per_second(base_url, 2, 4)  # its first answers are slow (loading, caches)
        yield base_url


def answers_per_second(
    base_url: str, workers: int | Literal["auto"], tasks: int, limits: list[int] | None = None
) -> float:
    """Runs ``tasks`` short answers; with ``limits``, records the auto limit every 0.1 s while
    calls are in flight."""
    client = create_openrouter_client(api_key="local", base_url=base_url, model="smollm2")
    executor = executor_for(client, max_workers=workers, max_retries=3)
    done = threading.Event()
    concurrency = executor.concurrency

    def watch() -> None:
        assert limits is not None and isinstance(concurrency, ConcurrencyLimit)
        while not done.wait(0.1):
            if concurrency.in_flight > 0:
                limits.append(concurrency.limit)

    watcher = threading.Thread(target=watch, daemon=True)
    if limits is not None:
        watcher.start()
    started = time.monotonic()
    try:
        result = executor.execute_batch(
            [SimpleLLMTask(f"t{i}", f"Say the number {i}.", max_tokens=16) for i in range(tasks)]
        )
    finally:
        done.set()
        client.close()
    wall = time.monotonic() - started
    if watcher.is_alive():
        watcher.join()
    assert all(r.success for r in result.task_results), [r.error for r in result.task_results]
    return tasks / wall


def test_auto_workers_settle_at_the_slots_of_a_llama_server(two_slots: str) -> None:
    fixed = answers_per_second(two_slots, 2, 24)
    seen: list[int] = []
    auto = answers_per_second(two_slots, "auto", 48, seen)
    limits = seen[len(seen) // 2 :]  # the second half: after the slow start
    assert limits, "the run ended before the limit could be seen"
    # two slots decoded together each answer later than one alone (about 1.5 times, on the
    # 2 cores the server and aita share): a limit that settled at 1 would take that for a
    # queue; 4 or more would queue in the server. (Not "exactly 2": 48 answers are a few
    # windows, and what one slot more buys moves with the machine's other load.)
    assert max(limits) >= 2 and statistics.median(limits) <= 3, limits
    assert auto >= 0.7 * fixed, (auto, fixed)
