"""Task graphs: tasks start as soon as their dependencies succeed; bad graphs fail before calls."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from aita.engine import LLMMessage, LLMResponse, ParallelLLMExecutor, SimpleLLMTask, Usage
from aita.errors import TaskGraphError
from tests.support.doubles import SimulatorFactory, client_for, executor_for


class TimelineClient:
    """Records when each prompt's call starts and ends; slow prompts take longer."""

    def __init__(self, seconds: dict[str, float], fail: set[str] | None = None) -> None:
        self.seconds = seconds
        self.fail = fail or set()
        self.spans: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        name = str(messages[-1].content).split()[0]
        start = time.monotonic()
        time.sleep(self.seconds.get(name, 0.1))
        with self.lock:
            self.spans[name] = (start, time.monotonic())
        if name in self.fail:
            from aita.errors import BadRequest

            raise BadRequest(f"{name} is refused", status_code=400)
        return LLMResponse(content=f"done {name}", usage=Usage(1, 1, 2), model="local")


def diamond(**extra: Any) -> list[SimpleLLMTask]:
    return [
        SimpleLLMTask("D", "D: combine", dependencies=["B", "C"]),
        SimpleLLMTask("B", "B: left", dependencies=["A"]),
        SimpleLLMTask("C", "C: right", dependencies=["A"]),
        SimpleLLMTask("A", "A: root"),
        *extra.get("more", []),
    ]


def test_diamond_runs_a_then_b_and_c_together_then_d() -> None:
    client = TimelineClient({"A:": 0.1, "B:": 0.2, "C:": 0.2, "D:": 0.1})
    result = executor_for(client, max_workers=4).execute_batch(diamond())
    assert [r.task_id for r in result.task_results] == ["D", "B", "C", "A"]  # input order
    assert all(r.success for r in result.task_results)
    a, b, c, d = (client.spans[k] for k in ("A:", "B:", "C:", "D:"))
    assert b[0] >= a[1] and c[0] >= a[1]
    assert b[0] < c[1] and c[0] < b[1]  # B and C overlap
    assert d[0] >= max(b[1], c[1])


def test_a_task_starts_when_its_own_dependencies_finish_not_in_waves() -> None:
    # E needs only A; it must not wait for the slow B of the same "wave".
    client = TimelineClient({"A:": 0.05, "B:": 0.5, "C:": 0.05, "E:": 0.05, "D:": 0.05})
    tasks = diamond(more=[SimpleLLMTask("E", "E: quick", dependencies=["C"])])
    executor_for(client, max_workers=4).execute_batch(tasks)
    assert client.spans["E:"][1] < client.spans["B:"][1]


def test_dependency_results_reach_the_prompt(simulator: SimulatorFactory) -> None:
    sim = simulator()
    result = executor_for(client_for(sim)).execute_batch(diamond())
    d = result.get_result_by_id("D")
    assert d is not None and "[B]\n[sim] B: left" in d.result and "[C]\n" in d.result


def test_cycle_is_refused_before_any_call_naming_the_tasks(simulator: SimulatorFactory) -> None:
    sim = simulator()
    tasks = [
        SimpleLLMTask("a", "a", dependencies=["c"]),
        SimpleLLMTask("b", "b", dependencies=["a"]),
        SimpleLLMTask("c", "c", dependencies=["b"]),
        SimpleLLMTask("free", "free"),
    ]
    with pytest.raises(TaskGraphError, match="cycle") as caught:
        executor_for(client_for(sim)).execute_batch(tasks)
    assert all(name in str(caught.value) for name in ("a", "b", "c"))
    assert sim.stats.requests == 0


def test_unknown_dependency_is_refused_before_any_call(simulator: SimulatorFactory) -> None:
    sim = simulator()
    with pytest.raises(TaskGraphError, match="'x' depends on unknown task 'ghost'"):
        executor_for(client_for(sim)).execute_batch(
            [SimpleLLMTask("x", "x", dependencies=["ghost"])]
        )
    assert sim.stats.requests == 0


def test_failed_dependency_skips_its_dependents_with_the_reason() -> None:
    client = TimelineClient({}, fail={"A:"})
    tasks = diamond(more=[SimpleLLMTask("Z", "Z: unrelated")])
    result = executor_for(client).execute_batch(tasks)
    by_id = {r.task_id: r for r in result.task_results}
    assert by_id["A"].error_type == "BadRequest"
    for skipped in ("B", "C", "D"):
        assert by_id[skipped].error_type == "DependencyFailed"
        assert "'A'" in (by_id[skipped].error or "")
    assert by_id["Z"].success
    assert set(client.spans) == {"A:", "Z:"}  # nothing was called for the skipped tasks


def test_resume_across_the_graph_reruns_only_what_did_not_succeed() -> None:
    failing = TimelineClient({}, fail={"B:"})
    first = executor_for(failing).execute_batch(diamond(), checkpoint_name="graph")
    assert [r.success for r in first.task_results] == [False, False, True, True]  # D, B, C, A
    healthy = TimelineClient({})
    second = executor_for(healthy).execute_batch(diamond(), checkpoint_name="graph")
    assert all(r.success for r in second.task_results)
    assert set(healthy.spans) == {"B:", "D:"}


def test_flat_batches_need_no_graph(simulator: SimulatorFactory) -> None:
    sim = simulator()
    executor = ParallelLLMExecutor(
        client_for(sim), max_workers=4, rate_limit=None, show_progress=False
    )
    tasks = [SimpleLLMTask(f"t{i}", f"p{i}") for i in range(20)]
    result = executor.execute_batch(tasks)
    assert [r.result for r in result.task_results] == [f"[sim] p{i}" for i in range(20)]
