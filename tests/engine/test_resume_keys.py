"""Resume task by task: a record is reused only for the same task id and the same request."""

from __future__ import annotations

from pathlib import Path

from aita.engine import CheckpointManager, SimpleLLMTask
from tests.support.doubles import (
    SimulatorFactory,
    assert_own_answers_in_order,
    client_for,
    executor_for,
    questions,
)


def test_one_edited_prompt_makes_exactly_one_call(simulator: SimulatorFactory) -> None:
    sim = simulator()
    executor_for(client_for(sim)).execute_batch(questions(50), checkpoint_name="job")
    assert sim.stats.requests == 50
    edited = questions(50)
    edited[17] = SimpleLLMTask("q0017", "question 17, rephrased")
    result = executor_for(client_for(sim)).execute_batch(edited, checkpoint_name="job")
    assert sim.stats.requests == 51
    assert result.task_results[17].result == "[sim] question 17, rephrased"
    assert not result.task_results[17].from_checkpoint
    others = [r for i, r in enumerate(result.task_results) if i != 17]
    assert all(r.from_checkpoint for r in others)
    assert [r.result for r in others] == [f"[sim] question {i}" for i in range(50) if i != 17]
    m = result.metrics
    assert (m.resumed_tasks, m.changed_tasks, m.new_tasks) == (49, 1, 0)


def test_one_added_task_makes_exactly_one_call(simulator: SimulatorFactory) -> None:
    sim = simulator()
    executor_for(client_for(sim)).execute_batch(questions(50), checkpoint_name="job")
    result = executor_for(client_for(sim)).execute_batch(questions(51), checkpoint_name="job")
    assert sim.stats.requests == 51
    assert_own_answers_in_order(result.task_results)
    assert (result.metrics.resumed_tasks, result.metrics.new_tasks) == (50, 1)


def test_another_model_answers_every_task_again(simulator: SimulatorFactory) -> None:
    sim = simulator()
    executor_for(client_for(sim, model="model/a")).execute_batch(
        questions(50), checkpoint_name="job"
    )
    result = executor_for(client_for(sim, model="model/b")).execute_batch(
        questions(50), checkpoint_name="job"
    )
    assert sim.stats.requests == 100
    assert {r.model for r in result.task_results} == {"model/b"}
    assert not any(r.from_checkpoint for r in result.task_results)
    assert result.metrics.changed_tasks == 50


def test_new_parameters_or_a_new_task_version_are_asked_again(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim))
    executor.execute_batch([SimpleLLMTask("t", "p", temperature=0.1)], checkpoint_name="job")
    executor.execute_batch([SimpleLLMTask("t", "p", temperature=0.9)], checkpoint_name="job")
    assert sim.stats.requests == 2

    class Versioned(SimpleLLMTask):
        version = 2

    executor.execute_batch([Versioned("t", "p", temperature=0.9)], checkpoint_name="job")
    assert sim.stats.requests == 3
    again = executor.execute_batch([Versioned("t", "p", temperature=0.9)], checkpoint_name="job")
    assert sim.stats.requests == 3 and again.task_results[0].from_checkpoint


def test_a_changed_parser_reparses_the_stored_answer_without_a_call(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim))
    executor.execute_batch([SimpleLLMTask("t", "p")], checkpoint_name="job")
    shout = SimpleLLMTask("t", "p", parse_fn=str.upper)
    result = executor.execute_batch([shout], checkpoint_name="job")
    assert sim.stats.requests == 1
    assert result.task_results[0].result == "[SIM] P"


def test_tasks_no_longer_in_the_batch_are_ignored(simulator: SimulatorFactory) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim))
    executor.execute_batch(questions(10), checkpoint_name="job")
    result = executor.execute_batch(questions(3), checkpoint_name="job")
    assert [r.task_id for r in result.task_results] == ["q0000", "q0001", "q0002"]
    assert sim.stats.requests == 10


def test_a_change_flows_to_the_tasks_that_depend_on_it(simulator: SimulatorFactory) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim))

    def graph(root_prompt: str) -> list[SimpleLLMTask]:
        return [
            SimpleLLMTask("root", root_prompt),
            SimpleLLMTask("child", "use it", dependencies=["root"]),
            SimpleLLMTask("free", "unrelated"),
        ]

    executor.execute_batch(graph("first"), checkpoint_name="job")
    result = executor.execute_batch(graph("second"), checkpoint_name="job")
    assert sim.stats.requests == 5  # root and child again; free reused
    child = result.get_result_by_id("child")
    assert child is not None and "[sim] second" in child.result


def test_an_unreadable_record_is_skipped_and_its_task_runs_again(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim))
    first = executor.execute_batch(questions(3), checkpoint_name="job")
    assert first.checkpoint_path is not None
    lines = first.checkpoint_path.read_bytes().splitlines(keepends=True)
    doctored = [
        line.replace(b'"ok":true', b'"ok":"false"', 1) if b"q0001" in line else line
        for line in lines
    ]
    first.checkpoint_path.write_bytes(b"".join(doctored))
    result = executor.execute_batch(questions(3), checkpoint_name="job")
    assert_own_answers_in_order(result.task_results)
    assert sim.stats.requests == 4  # only q0001, whose record was not valid
    assert CheckpointManager("checkpoints").load(first.checkpoint_path).records["q0001"].succeeded
