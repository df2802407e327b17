"""run_via_batch_api: tasks through the simulator's Files and Batches endpoints, at half price."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import openai
import pytest
from pydantic import BaseModel

from aita.engine import (
    BatchInterrupted,
    LLMTask,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    SimpleLLMTask,
    SpendLedger,
    Usage,
    cancel_batch_api,
    cost_of,
    run_via_batch_api,
)
from aita.engine import LLMMessage as Message
from aita.errors import ConfigError
from aita.simulator import ProviderSimulator
from aita.simulator.batches import EXPIRED_MESSAGE, BatchSimulation
from tests.support.doubles import TEST_KEY, FakeClock, SimulatorFactory, client_for, interrupt_when

MODEL = "openai/gpt-4o-mini"


def tasks(n: int, prefix: str = "task") -> list[SimpleLLMTask]:
    return [SimpleLLMTask(f"t{i:04d}", f"{prefix} {i}") for i in range(n)]


class PollClock(FakeClock):
    """The clock a job polls by and its simulator's batches run on: sleeping moves both, so
    polling never really waits. ``at[n]`` runs at the n-th sleep (from 1), as a user or the
    provider would act at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[int, Callable[[], object]] = {}

    def sleep(self, seconds: float, /) -> None:
        super().sleep(seconds)
        action = self.at.get(len(self.sleeps))
        if action is not None:
            action()


#: each simulator's clock, by its base URL: what ``run`` polls it by
CLOCKS: dict[str, PollClock] = {}


def provider(
    simulator: SimulatorFactory, announce: bool = False, report_cost: bool = False, **batches: Any
) -> ProviderSimulator:
    """A simulator standing in for a real provider (no cost reported: the price table's), its
    batches taking 2 s on a fake clock."""
    sim = simulator(announce=announce, report_cost=report_cost)
    clock = CLOCKS[sim.base_url] = PollClock()
    sim.batch_api.simulation = BatchSimulation(
        **{"processing_seconds": 2.0, "clock": clock, **batches}
    )
    return sim


def clock_of(sim: ProviderSimulator) -> PollClock:
    return CLOCKS[sim.base_url]


def run(client: OpenAICompatibleClient, task_list: list[Any], **options: Any) -> Any:
    """``run_via_batch_api`` as tests call it: polled every 0.5 s on the simulator's clock."""
    clock = CLOCKS.get(client.base_url, time)
    options = {"checkpoint_name": "job", "poll_interval": 0.5, "clock": clock, **options}
    return run_via_batch_api(client, task_list, **options)


def test_every_task_gets_its_own_answer_in_input_order(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    result = run(client_for(sim, model=MODEL), tasks(50))
    assert [r.task_id for r in result.task_results] == [f"t{i:04d}" for i in range(50)]
    assert [r.result for r in result.task_results] == [f"[sim] task {i}" for i in range(50)]
    assert sim.stats.requests == 0  # no chat completion was called one by one
    assert sim.batch_api.stats.batches_created == 1


def test_the_cost_is_half_the_price_of_the_same_calls_one_by_one(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = provider(simulator)
    result = run(client_for(sim, model=MODEL), tasks(20))
    full = sum(
        cost_of(MODEL, Usage(r.prompt_tokens, r.completion_tokens)) or 0.0
        for r in result.task_results
    )
    assert result.metrics.total_cost == pytest.approx(full / 2)
    assert all(r.cost > 0 for r in result.task_results)
    ledger = list(SpendLedger(tmp_path / "spend.jsonl").entries())
    assert len(ledger) == 20
    assert sum(e.cost or 0.0 for e in ledger) == pytest.approx(full / 2)


def test_a_cost_the_provider_reports_is_taken_as_it_is(simulator: SimulatorFactory) -> None:
    sim = provider(simulator, report_cost=True)  # reports the batch price itself
    result = run(client_for(sim, model=MODEL), tasks(5))
    own = sum(
        (r.prompt_tokens * 0.30 + r.completion_tokens * 2.50) / 1e6 / 2 for r in result.task_results
    )
    assert result.metrics.total_cost == pytest.approx(own)


def test_simulated_items_cost_nothing_whatever_their_usage_says(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    # as `aita simulate`: it reports a cost, and says it is simulated
    sim = provider(simulator, announce=True, report_cost=True)
    result = run(client_for(sim, model=MODEL), tasks(5))
    assert all(r.success and r.simulated and r.cost == 0.0 for r in result.task_results)
    assert result.metrics.total_cost == 0.0 and result.metrics.simulated_requests == 5
    assert not (tmp_path / "spend.jsonl").exists()  # nothing was paid


def test_failed_and_expired_items_are_submitted_again_until_answered(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, failure_rate=0.15, expiry_rate=0.1)
    result = run(client_for(sim, model=MODEL), tasks(200), max_rounds=8)
    assert [r.result for r in result.task_results] == [f"[sim] task {i}" for i in range(200)]
    stats = sim.batch_api.stats
    assert stats.failed_items > 0 and stats.expired_items > 0
    assert stats.uploaded_requests == 200 + stats.failed_items + stats.expired_items
    assert stats.repeated_answers() == 0  # nothing answered was asked again
    assert result.metrics.total_retries == stats.failed_items + stats.expired_items


def test_items_still_failing_after_the_last_round_fail_with_the_providers_error(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, failure_rate=1.0)
    result = run(client_for(sim, model=MODEL), tasks(3), max_rounds=2)
    assert not any(r.success for r in result.task_results)
    assert all("simulated error" in (r.error or "") for r in result.task_results)
    assert sim.batch_api.stats.batches_created == 2


def test_a_job_larger_than_one_batch_file_is_split(simulator: SimulatorFactory) -> None:
    sim = provider(simulator, max_requests=40)
    result = run(client_for(sim, model=MODEL), tasks(100), max_requests_per_file=40)
    assert result.success_rate == 100.0
    assert sim.batch_api.stats.batches_created == 3


class Verdict(BaseModel):
    label: str
    score: float


class VerdictTask(LLMTask):
    response_model: ClassVar[type[BaseModel] | None] = Verdict

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def task_id(self) -> str:
        return f"v{self.n}"

    def build_messages(self) -> list[Message]:
        return [Message(role="user", content=f"judge {self.n}")]


def test_a_response_model_is_sent_as_a_schema_and_parsed(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    result = run(client_for(sim, model=MODEL), [VerdictTask(i) for i in range(4)])
    assert all(isinstance(r.result, Verdict) for r in result.task_results)


def test_answers_go_into_the_journal_that_execute_batch_reuses(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    run(client, tasks(10))
    executor = ParallelLLMExecutor(client, checkpoint_dir="checkpoints", show_progress=False)
    again = executor.execute_batch(tasks(10), checkpoint_name="job")
    assert again.metrics.resumed_tasks == 10
    assert sim.stats.requests == 0
    # ... and the other way round: what the journal holds is not submitted.
    executor.execute_batch(tasks(12), checkpoint_name="job")
    uploaded = sim.batch_api.stats.uploaded_requests
    assert run(client, tasks(12)).metrics.resumed_tasks == 12
    assert sim.batch_api.stats.uploaded_requests == uploaded


def test_a_changed_task_is_not_answered_by_the_batch_that_asked_the_old_question(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    run(client, tasks(5))
    result = run(client, tasks(5, prefix="edited"))
    assert [r.result for r in result.task_results] == [f"[sim] edited {i}" for i in range(5)]


def test_interrupted_while_polling_a_run_again_collects_the_same_batch(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, processing_seconds=1.0)
    client = client_for(sim, model=MODEL)
    stats = sim.batch_api.stats
    watcher = interrupt_when(lambda: stats.batches_created == 1 and stats.retrievals >= 2)
    with pytest.raises(BatchInterrupted, match="keep running at the provider"):
        run(client, tasks(30))
    watcher.join()
    assert stats.uploads == 1
    result = run(client, tasks(30))
    assert [r.result for r in result.task_results] == [f"[sim] task {i}" for i in range(30)]
    assert (stats.uploads, stats.batches_created) == (1, 1)  # polled, not submitted again


def test_a_batch_created_but_not_recorded_before_a_kill_is_found_and_adopted(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    # What a run killed between "batch created" and "state written" leaves: an upload on record.
    lines = "".join(
        json.dumps(
            {
                "custom_id": task.task_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": task.prompt}]},
            }
        )
        + "\n"
        for task in tasks(6)
    )
    sdk = openai.OpenAI(api_key=TEST_KEY, base_url=sim.base_url)
    upload = sdk.files.create(file=("in.jsonl", lines.encode()), purpose="batch")
    sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    folder = tmp_path / "checkpoints"
    (folder / "job.batch-api").mkdir(parents=True)
    keys = [
        [t.task_id, _key_of(client, t)] for t in tasks(6)
    ]  # what the run had recorded before uploading
    (folder / "job.batch-api" / "k.keys.jsonl").write_text(
        "".join(json.dumps(k) + "\n" for k in keys)
    )
    state = {
        "aita_batch_api": 1,
        "name": "job",
        "base_url": sim.base_url,
        "batches": [],
        "uploads": [
            {"input_file_id": upload.id, "keys": "k.keys.jsonl", "requests": 6, "uploaded_at": 0}
        ],
    }
    (folder / "job.batch-api.json").write_text(json.dumps(state))
    result = run(client, tasks(6))
    assert result.success_rate == 100.0
    assert sim.batch_api.stats.batches_created == 1  # adopted, not created again
    assert sim.batch_api.stats.uploads == 1


def _key_of(client: OpenAICompatibleClient, task: SimpleLLMTask) -> str:
    from aita.engine import request_key

    return request_key(client.model, task.build_messages(), task.request_params(), task.version)


def test_cancel_stops_the_batches_a_run_left_running(simulator: SimulatorFactory) -> None:
    sim = provider(simulator, processing_seconds=30.0)
    client = client_for(sim, model=MODEL)
    stats = sim.batch_api.stats
    watcher = interrupt_when(lambda: stats.batches_created == 1)
    with pytest.raises(BatchInterrupted):
        run(client, tasks(10))
    watcher.join()
    assert len(cancel_batch_api(client, "job")) == 1
    assert stats.cancels == 1
    sim.batch_api.simulation.processing_seconds = 0.1
    result = run(client, tasks(10))  # collects the cancelled batch, submits what it left
    assert result.success_rate == 100.0
    assert stats.batches_created == 2
    assert cancel_batch_api(client, "job") == []


def test_a_server_without_a_batch_api_is_a_clear_error(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    client = OpenAICompatibleClient(api_key="k", model=MODEL, base_url=f"{sim.base_url}/none")
    with pytest.raises(ConfigError, match="has no Batch API"):
        run(client, tasks(2))


def test_an_item_error_is_the_providers_error_as_a_live_call_would_have_it(
    simulator: SimulatorFactory,
) -> None:
    failing = provider(simulator, failure_rate=1.0)
    failed = run(client_for(failing, model=MODEL), tasks(2), max_rounds=2).task_results
    for result in failed:
        assert result.error == "provider unavailable (HTTP 500): simulated error"
        assert (result.outcome, result.error_type, result.retry_count) == (
            "failed",
            "ProviderUnavailable",
            1,
        )
    expiring = provider(simulator, expiry_rate=1.0)
    expired = run(client_for(expiring, model=MODEL), tasks(2), max_rounds=1).task_results
    for result in expired:
        assert result.error == f"provider unavailable: batch_expired: {EXPIRED_MESSAGE}"
        assert (result.error_type, result.retry_count) == ("ProviderUnavailable", 0)
