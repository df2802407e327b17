"""run_via_batch_api: tasks through the simulator's Files and Batches endpoints, at half price."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from aita.engine import LLMMessage as Message
from aita.engine import (
    LLMTask,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    SimpleLLMTask,
    SpendLedger,
    Telemetry,
    Usage,
    cost_of,
    run_via_batch_api,
)
from aita.errors import (
    BatchOverdue,
    ConfigError,
    ProviderUnavailable,
)
from aita.simulator import ProviderSimulator
from aita.simulator.batches import EXPIRED_MESSAGE, BatchSimulation
from tests.support.doubles import TEST_KEY, FakeClock, SimulatorFactory, client_for

MODEL = "openai/gpt-4o-mini"
#: Every test here takes well under a second; one that hangs fails fast.
pytestmark = pytest.mark.timeout(10)


def tasks(n: int, prefix: str = "task") -> list[SimpleLLMTask]:
    return [SimpleLLMTask(f"t{i:04d}", f"{prefix} {i}") for i in range(n)]


class PollClock(FakeClock):
    """The clock a job polls by and its simulator's batches run on: sleeping moves both, so
    polling never really waits. ``at[n]`` runs at the n-th sleep (from 1), as a user or the
    provider would act at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 1_700_000_000.0  # whole seconds: a batch's created_at is exact
        self.at: dict[int, Callable[[], object]] = {}

    def sleep(self, seconds: float, /) -> None:
        super().sleep(seconds)
        if len(self.sleeps) > 200:  # no test polls this long: a loop that never ends
            raise RuntimeError("slept 200 times")
        action = self.at.get(len(self.sleeps))
        if action is not None:
            action()


#: each simulator's clock, by its base URL: what ``run`` polls it by
CLOCKS: dict[str, PollClock] = {}


def provider(
    simulator: SimulatorFactory, announce: bool = False, report_cost: bool = False, **batches: Any
) -> ProviderSimulator:
    """A simulator standing in for a real provider (no cost reported: the price table's), its
    batches taking 0.5 s on a fake clock (one or two polls)."""
    sim = simulator(announce=announce, report_cost=report_cost)
    clock = CLOCKS[sim.base_url] = PollClock()
    sim.batch_api.simulation = BatchSimulation(
        **{
            "processing_seconds": 0.5,
            "clock": clock,
            "wall": clock.time,
            "max_retrievals": 300,  # no test polls more: a loop that never sleeps fails
            **batches,
        }
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


def test_a_server_without_a_batch_api_is_a_clear_error(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    client = OpenAICompatibleClient(api_key="k", model=MODEL, base_url=f"{sim.base_url}/none")
    with pytest.raises(ConfigError) as raised:
        run(client, tasks(2))
    assert str(raised.value) == (
        f"{sim.base_url}/none has no Batch API (model not found (HTTP 404): upload a batch file: "
        "unknown endpoint /v1/none/files); OpenAI has one (AITA_BASE_URL=https://api.openai.com/v1)"
    )


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


def test_lines_of_an_output_file_that_are_no_answer_to_a_pending_task_are_skipped(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    duplicate = {
        "custom_id": "t0000",
        "response": {"status_code": 200, "body": {"choices": [{"message": {"content": "[dup]"}}]}},
    }
    noise = [b"not json\n", b"\n", b"   \n", b"[1, 2]\n", b'{"custom_id": 5}\n']
    noise += [b'{"custom_id": [1]}\n', b'{"custom_id": "nobody"}\n']
    again = json.dumps(duplicate).encode() + b"\n"
    sim = provider(simulator, output_lines=lambda lines: noise + lines + [again])
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        result = run(client_for(sim, model=MODEL), tasks(3))
    assert [r.result for r in result.task_results] == [f"[sim] task {i}" for i in range(3)]
    assert caplog.messages == ["file file-sim000003: skipped a line that is not JSON"]


def test_the_model_asked_stands_for_an_answer_that_names_none(simulator: SimulatorFactory) -> None:
    sim = provider(
        simulator, output_lines=mangled(lambda item: item["response"]["body"].pop("model"))
    )
    result = run(client_for(sim, model=MODEL), tasks(2))
    assert [r.model for r in result.task_results] == [MODEL, MODEL]


def mangled(change: Callable[[dict[str, Any]], object]) -> Callable[[list[bytes]], list[bytes]]:
    """Output lines whose items ``change`` has changed, as an odd provider writes them."""

    def lines(given: list[bytes]) -> list[bytes]:
        items = [json.loads(line) for line in given]
        for item in items:
            change(item)
        return [json.dumps(item).encode() + b"\n" for item in items]

    return lines


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda item: item.update(response="odd"), "provider unavailable: unknown: not answered"),
        (
            lambda item: item["response"].update(body="odd"),
            "provider unavailable: unknown: not answered",
        ),
        (
            lambda item: item.update(error={"code": "x", "message": "m"}, response=None),
            "provider unavailable: x: m",
        ),
        (
            lambda item: item["response"]["body"].pop("choices"),
            "invalid response: response has no choices",
        ),
    ],
    ids=["response not an object", "body not an object", "an error item", "no choices"],
)
def test_an_odd_item_is_asked_again_then_fails_with_what_was_wrong(
    simulator: SimulatorFactory, change: Callable[[dict[str, Any]], object], error: str
) -> None:
    sim = provider(simulator, output_lines=mangled(change))
    result = run(client_for(sim, model=MODEL), tasks(2), max_rounds=2)
    assert [r.error for r in result.task_results] == [error] * 2
    assert sim.batch_api.stats.batches_created == 2


def test_results_that_cannot_be_downloaded_stop_the_run_and_the_next_collects_them(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own retries of the download, without their seconds of backoff.
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", 0.001)
    sim = provider(simulator, unreadable_files=True)
    client = client_for(sim, model=MODEL)
    with pytest.raises(ProviderUnavailable) as raised:
        run(client, tasks(2))
    assert str(raised.value) == (
        "provider unavailable (HTTP 500): download batch results: the file cannot be read now"
    )
    sim.batch_api.simulation.unreadable_files = False
    result = run(client, tasks(2))
    assert [r.result for r in result.task_results] == ["[sim] task 0", "[sim] task 1"]
    assert sim.batch_api.stats.batches_created == 1


def test_an_empty_answer_is_asked_again_and_fails_as_a_live_call_would(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    sim.config.responder = lambda request: ""
    result = run(client_for(sim, model=MODEL), tasks(2), max_rounds=2)
    assert [r.error_type for r in result.task_results] == ["EmptyResponse"] * 2
    assert [r.retry_count for r in result.task_results] == [1, 1]
    assert sim.batch_api.stats.batches_created == 2


@pytest.mark.parametrize(
    ("window", "poll", "late"),
    [
        (1000, 1101, "101 s"),
        (1000, 1100, "1200 s"),
        (0, 0.4, "1 s"),
        (30000, 33600, "1.0 h"),
        (36000, 39780, "1.1 h"),
    ],
    ids=["101s", "1200s", "1s", "1.0h", "1.1h"],
)
def test_a_batch_is_overdue_a_tenth_of_its_window_past_its_end(
    simulator: SimulatorFactory, window: int, poll: float, late: str
) -> None:
    sim = provider(simulator, processing_seconds=10**9, window_seconds=window)
    with pytest.raises(BatchOverdue) as raised:
        run(client_for(sim, model=MODEL), tasks(1), poll_interval=poll)
    assert str(raised.value) == (
        f"batch overdue: batch batch_sim000002 is still in_progress {late} past its completion "
        "window: the provider is not finishing it. It is kept: run again later to collect it, or "
        "cancel it (aita batch cancel)"
    )


def test_a_batch_finished_past_its_window_is_collected(simulator: SimulatorFactory) -> None:
    sim = provider(simulator, processing_seconds=1, window_seconds=1)
    result = run(client_for(sim, model=MODEL), tasks(1), poll_interval=1.2)
    assert result.task_results[0].result == "[sim] task 0"


def test_the_progress_bar_tallies_the_batches_by_status(
    simulator: SimulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = provider(simulator, max_requests=2)  # the batch of 3 fails its validation at once
    run(client_for(sim, model=MODEL), tasks(5), max_requests_per_file=3, show_progress=True)
    assert "failed=1 in_progress=1" in capsys.readouterr().err


def error_item(response: Any, error: Any = None) -> Callable[[dict[str, Any]], object]:
    return lambda item: item.update(response=response, error=error)


@pytest.mark.parametrize(
    ("change", "error", "kind"),
    [
        (
            error_item({"status_code": 429, "body": {"error": {"message": f"slow {TEST_KEY}"}}}),
            "rate limited (HTTP 429): slow [redacted]",
            "RateLimited",
        ),
        (
            error_item({"status_code": 500, "body": {"message": "flat"}}),
            "provider unavailable (HTTP 500): flat",
            "ProviderUnavailable",
        ),
        (
            error_item({"status_code": 502, "body": {"error": "text"}}),
            "provider unavailable (HTTP 502): HTTP 502",
            "ProviderUnavailable",
        ),
        (
            error_item({"status_code": 500, "body": {"error": {"message": 3}}}),
            "provider unavailable (HTTP 500): HTTP 500",
            "ProviderUnavailable",
        ),
        (
            error_item({"status_code": 503, "body": "body"}),
            "provider unavailable (HTTP 503): HTTP 503",
            "ProviderUnavailable",
        ),
        (
            error_item(None, {"code": "batch_expired", "message": f"late {TEST_KEY}"}),
            "provider unavailable: batch_expired: late [redacted]",
            "ProviderUnavailable",
        ),
        (
            error_item({"status_code": 200, "body": "odd"}, "what"),
            "provider unavailable: unknown: not answered",
            "ProviderUnavailable",
        ),
        (
            error_item({"status_code": "200", "body": {}}, {}),
            "provider unavailable: unknown: not answered",
            "ProviderUnavailable",
        ),
    ],
    ids=["429", "500", "502", "500 no text", "503 no body", "expired", "200 odd", "no status"],
)
def test_an_items_error_reads_as_the_providers_answer_would(
    simulator: SimulatorFactory, change: Callable[[dict[str, Any]], object], error: str, kind: str
) -> None:
    sim = provider(simulator, output_lines=mangled(change))
    (result,) = run(client_for(sim, model=MODEL), tasks(1), max_rounds=1).task_results
    assert (result.error, result.error_type) == (error, kind)


def test_a_price_table_given_is_the_one_paid_at_half(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    prices = {MODEL: (1_000_000.0, 2_000_000.0)}  # a dollar per input token, two per output
    result = run(client_for(sim, model=MODEL), tasks(3), prices=prices)
    for r in result.task_results:
        assert r.cost == pytest.approx((r.prompt_tokens + 2 * r.completion_tokens) / 2)


def test_the_spend_ledger_is_the_one_given_or_none(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    assert run(client, tasks(2), spend_ledger=None).success_rate == 100.0
    assert not (tmp_path / "spend.jsonl").exists()  # the configured one is not written
    run(client, tasks(3), spend_ledger=tmp_path / "elsewhere.jsonl", checkpoint_name="other")
    assert len(list(SpendLedger(tmp_path / "elsewhere.jsonl").entries())) == 3
    assert not (tmp_path / "spend.jsonl").exists()


def test_a_batch_job_is_traced_as_one_batch_of_its_tasks(simulator: SimulatorFactory) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    sim = provider(simulator)
    run(client_for(sim, model=MODEL), tasks(3), telemetry=Telemetry(tracer_provider))
    finished = spans.get_finished_spans()
    (batch,) = [s for s in finished if s.name == "aita.batch"]
    attributes = dict(batch.attributes or {})
    assert (attributes["aita.batch.name"], attributes["aita.batch.tasks"]) == ("job", 3)
    assert attributes["aita.batch.completed"] == 3
    task_ids = {dict(s.attributes or {})["aita.task.id"] for s in finished if s.name == "aita.task"}
    assert task_ids == {"t0000", "t0001", "t0002"}


def test_only_the_polling_bar_is_drawn_and_none_without_progress(
    simulator: SimulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    run(client, tasks(2), show_progress=False)
    assert capsys.readouterr().err == ""
    run(client, tasks(2, prefix="again"), show_progress=True)
    drawn = capsys.readouterr().err
    assert "Batch API" in drawn and "Executing" not in drawn  # the counters draw no bar


class Unbuildable(SimpleLLMTask):
    def build_messages(self) -> list[Message]:
        raise ValueError(f"no messages for {TEST_KEY}")


def test_a_tasks_own_failure_is_redacted_as_the_providers_text_is(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    (result,) = run(client_for(sim, model=MODEL), [Unbuildable("t", "p")]).task_results
    assert (result.error, result.error_type) == ("no messages for [redacted]", "ValueError")
