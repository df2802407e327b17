"""execute_stream: any iterable in, results out in input order, a bounded window, resumable."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from aita.engine import LLMMessage, LLMResponse, SimpleLLMTask, TaskGraphError, Usage
from tests.support.doubles import SimulatorFactory, client_for, executor_for


def generate(
    n: int, prefix: str = "task", counter: list[int] | None = None
) -> Iterator[SimpleLLMTask]:
    for i in range(n):
        if counter is not None:
            counter[0] += 1
        yield SimpleLLMTask(f"t{i:06d}", f"{prefix} {i}")


def test_results_come_in_input_order_from_a_generator(simulator: SimulatorFactory) -> None:
    sim = simulator(latency=0.01, latency_jitter=0.01)
    stream = executor_for(client_for(sim), max_workers=8).execute_stream(generate(300))
    results = list(stream)
    assert [r.task_id for r in results] == [f"t{i:06d}" for i in range(300)]
    assert [r.result for r in results] == [f"[sim] task {i}" for i in range(300)]
    assert stream.metrics is not None and stream.metrics.completed_tasks == 300
    assert sim.stats.max_in_flight > 1


class InstantClient:
    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        return LLMResponse(content=f"ok {messages[-1].content}", usage=Usage(1, 1, 2), model="m")


def test_no_more_than_the_window_is_taken_ahead_of_what_was_handed_back() -> None:
    pulled = [0]
    stream = executor_for(InstantClient(), max_workers=4).execute_stream(
        generate(2000, counter=pulled), window=16
    )
    most_ahead = 0
    for handed, _ in enumerate(stream, start=1):
        most_ahead = max(most_ahead, pulled[0] - handed)
    assert handed == 2000 and most_ahead <= 16


def test_a_stream_resumes_from_its_journal_task_by_task(simulator: SimulatorFactory) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim))
    list(executor.execute_stream(generate(50), checkpoint_name="job"))
    stream = executor.execute_stream(generate(60), checkpoint_name="job")
    results = list(stream)
    assert sim.stats.requests == 60  # the first 50 came from the journal
    assert [r.from_checkpoint for r in results] == [True] * 50 + [False] * 10
    assert stream.metrics is not None
    assert (stream.metrics.resumed_tasks, stream.metrics.new_tasks) == (50, 10)


def test_a_stream_refuses_task_graphs_and_duplicate_ids() -> None:
    executor = executor_for(InstantClient())
    with pytest.raises(TaskGraphError, match="independent"):
        list(executor.execute_stream([SimpleLLMTask("a", "x", dependencies=["b"])]))
    with pytest.raises(TaskGraphError, match="duplicate"):
        list(executor.execute_stream([SimpleLLMTask("a", "x"), SimpleLLMTask("a", "y")]))


def test_stopping_early_leaves_no_worker_running(simulator: SimulatorFactory) -> None:
    sim = simulator(latency=0.02)
    stream = executor_for(client_for(sim), max_workers=4).execute_stream(generate(1000))
    for n, _ in enumerate(stream):
        if n == 20:
            break
    stream.close()
    threading.Event().wait(0.3)
    assert not [t for t in threading.enumerate() if t.name.startswith("aita-worker")]
    assert sim.stats.requests < 200


STREAM_RUN = """
import resource, sys, tempfile
from aita.engine import LLMResponse, ParallelLLMExecutor, SimpleLLMTask, Usage

class Instant:
    def complete(self, messages, **params):
        return LLMResponse(content="ok", usage=Usage(1, 1, 2), model="m")

n = int(sys.argv[1])
with tempfile.TemporaryDirectory() as folder:
    executor = ParallelLLMExecutor(
        Instant(), max_workers=8, rate_limit=None, checkpoint_dir=folder, show_progress=False,
        spend_ledger=folder + "/spend.jsonl",
    )
    tasks = (SimpleLLMTask(f"t{i:07d}", f"prompt {i}") for i in range(n))
    last = -1
    for result in executor.execute_stream(tasks, checkpoint_name="memory"):
        index = int(result.task_id[1:])
        assert index == last + 1, (index, last)
        last = index
    assert last == n - 1
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss(tasks: int) -> int:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", STREAM_RUN, str(tasks)],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return int(done.stdout.strip())


@pytest.mark.slow
def test_a_stream_of_200000_tasks_peaks_within_50_mb_of_one_of_20000() -> None:
    small, large = peak_rss(20_000), peak_rss(200_000)
    assert large - small <= 50 * 1024 * 1024, f"{(large - small) / 2**20:.1f} MB more"


def test_resuming_a_stream_leaves_no_index_file_behind(
    simulator: SimulatorFactory, tmp_path: Any
) -> None:
    from pathlib import Path

    sim = simulator()
    executor = executor_for(client_for(sim))
    list(executor.execute_stream(generate(30), checkpoint_name="job"))
    stream = executor.execute_stream(generate(40), checkpoint_name="job")
    for n, _ in enumerate(stream):
        if n == 0:  # mid-stream: the index is open, and already has no name
            assert not list(Path("checkpoints").glob(".journal-index-*"))
    assert stream.metrics is not None and stream.metrics.resumed_tasks == 30
    assert not list(Path("checkpoints").glob(".journal-index-*"))
