"""BatchableLLMTask: compatible tasks share one call, are split back, and run alone if missing."""

from __future__ import annotations

import json
import re
from typing import Any

from aita.engine import BatchableLLMTask, LLMMessage
from tests.support.doubles import SimulatorFactory, client_for, executor_for


class SquareTask(BatchableLLMTask):
    """Squares one number; combined, squares several in one call."""

    def __init__(self, numbers: list[int]) -> None:
        self.numbers = numbers

    @property
    def task_id(self) -> str:
        return "n" + "_".join(map(str, self.numbers))

    def build_messages(self) -> list[LLMMessage]:
        listed = ", ".join(map(str, self.numbers))
        return [LLMMessage(role="user", content=f"Square these numbers: {listed}")]

    def parse_response(self, response_text: str) -> Any:
        answer = json.loads(response_text)
        return answer if len(self.numbers) > 1 else answer[str(self.numbers[0])]

    def can_batch_with(self, other: BatchableLLMTask) -> bool:
        return isinstance(other, SquareTask)

    def combine_with(self, others: list[BatchableLLMTask]) -> BatchableLLMTask:
        return SquareTask(self.numbers + [n for o in others for n in o.numbers])  # type: ignore[attr-defined]

    def split_batch_result(self, batch_result: Any) -> dict[str, Any]:
        return {f"n{n}": batch_result[str(n)] for n in self.numbers if str(n) in batch_result}


def squares(drop: int | None = None) -> Any:
    def answer(request: dict[str, Any]) -> str:
        text = request["messages"][-1]["content"]
        numbers = [int(n) for n in re.findall(r"\d+", text.split(":", 1)[1])]
        result = {str(n): n * n for n in numbers if not (n == drop and len(numbers) > 1)}
        return json.dumps(result)

    return answer


def test_twenty_batchable_tasks_with_batch_size_five_make_four_calls(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator(responder=squares())
    executor = executor_for(client_for(sim), max_batch_size=5)
    result = executor.execute_batch([SquareTask([n]) for n in range(20)])
    assert sim.stats.requests == 4
    assert [r.result for r in result.task_results] == [n * n for n in range(20)]
    assert all(r.batched and r.success for r in result.task_results)
    assert result.metrics.total_cost == 0 and result.metrics.simulated_requests == 4


def test_a_task_missing_from_the_split_is_retried_alone(simulator: SimulatorFactory) -> None:
    sim = simulator(responder=squares(drop=7))
    result = executor_for(client_for(sim), max_batch_size=5).execute_batch(
        [SquareTask([n]) for n in range(20)]
    )
    assert [r.result for r in result.task_results] == [n * n for n in range(20)]
    assert sim.stats.requests == 5
    assert result.get_result_by_id("n7").batched is False  # type: ignore[union-attr]


def test_batch_size_one_turns_batching_off(simulator: SimulatorFactory) -> None:
    sim = simulator(responder=squares())
    executor_for(client_for(sim), max_batch_size=1).execute_batch(
        [SquareTask([n]) for n in range(6)]
    )
    assert sim.stats.requests == 6


def test_batched_results_resume_from_the_checkpoint(simulator: SimulatorFactory) -> None:
    sim = simulator(responder=squares())
    tasks = [SquareTask([n]) for n in range(10)]
    first = executor_for(client_for(sim), max_batch_size=5).execute_batch(
        tasks, checkpoint_name="sq"
    )
    second = executor_for(client_for(sim), max_batch_size=5).execute_batch(
        tasks, checkpoint_name="sq"
    )
    assert sim.stats.requests == 2
    assert [r.result for r in second.task_results] == [r.result for r in first.task_results]
    assert second.metrics.resumed_tasks == 10
