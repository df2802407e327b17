"""The executor over real HTTP to the simulator: order, retries, 429s, resume, metrics."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from aita.engine import (
    BatchInterrupted,
    CheckpointManager,
    LLMMessage,
    LLMResponse,
    LLMTask,
    ParallelLLMExecutor,
    SimpleLLMTask,
    TaskResult,
    Usage,
)
from aita.errors import RateLimited, TaskGraphError
from tests.support.doubles import (
    SimulatorFactory,
    assert_own_answers_in_order,
    client_for,
    executor_for,
    questions,
)


@pytest.mark.slow
def test_240_tasks_at_the_providers_limit_with_500s(simulator: SimulatorFactory) -> None:
    sim = simulator(rate_limit=20, latency=0.05, error_rate=0.10)
    executor = executor_for(client_for(sim), max_workers=12, rate_limit=20, max_retries=8)
    result = executor.execute_batch(questions(240))
    assert_own_answers_in_order(result.task_results)
    assert sim.stats.by_status[500] > 0  # faults really happened and were retried
    assert sim.stats.rate_limited < 0.05 * sim.stats.requests
    assert result.metrics.requests == sim.stats.requests


def test_results_come_back_in_input_order_despite_mixed_latency(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator(latency=0.02, latency_jitter=0.02)
    result = executor_for(client_for(sim)).execute_batch(questions(60))
    assert_own_answers_in_order(result.task_results)
    assert sim.stats.max_in_flight > 1


def test_resume_retries_failed_tasks_and_skips_finished_ones(simulator: SimulatorFactory) -> None:
    flaky = simulator(error_rate=0.5)
    first = executor_for(client_for(flaky), max_retries=0).execute_batch(
        questions(40), checkpoint_name="exam"
    )
    failed = len(first.failed_results)
    assert 0 < failed < 40
    healthy = simulator()
    second = executor_for(client_for(healthy)).execute_batch(questions(40), checkpoint_name="exam")
    assert_own_answers_in_order(second.task_results)
    assert healthy.stats.requests == failed
    assert second.metrics.resumed_tasks == 40 - failed
    assert second.checkpoint_path == first.checkpoint_path


def test_a_changed_batch_continues_its_journal_and_reruns_only_changed_tasks(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator()
    first = executor_for(client_for(sim)).execute_batch(questions(5), checkpoint_name="exam")
    second = executor_for(client_for(sim)).execute_batch(
        questions(5, prefix="other"), checkpoint_name="exam"
    )
    assert_own_answers_in_order(second.task_results, prefix="other")
    assert second.checkpoint_path == first.checkpoint_path  # continued, not started fresh
    assert sim.stats.requests == 10  # every prompt changed: every task ran again
    assert (second.metrics.changed_tasks, second.metrics.resumed_tasks) == (5, 0)


def test_corrupt_checkpoint_warns_and_starts_fresh(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim))
    first = executor.execute_batch(questions(5), checkpoint_name="exam")
    assert first.checkpoint_path is not None
    first.checkpoint_path.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING):
        second = executor.execute_batch(questions(5), checkpoint_name="exam")
    assert_own_answers_in_order(second.task_results)
    assert "not a readable aita checkpoint" in caplog.text
    assert second.checkpoint_path != first.checkpoint_path  # the corrupt file is left alone


def test_resume_false_ignores_the_checkpoint(simulator: SimulatorFactory) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim))
    executor.execute_batch(questions(5), checkpoint_name="exam")
    executor.execute_batch(questions(5), checkpoint_name="exam", resume_from_checkpoint=False)
    assert sim.stats.requests == 10


class ScriptedClient:
    """A user-supplied client (allowed by the client protocol) that records when calls start."""

    def __init__(self, fail_first_with: Exception | None = None) -> None:
        self.fail_first_with = fail_first_with
        self.starts: list[float] = []
        self.lock = threading.Lock()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        with self.lock:
            self.starts.append(time.monotonic())
            first = len(self.starts) == 1
        if first and self.fail_first_with is not None:
            raise self.fail_first_with
        return LLMResponse(
            content=f"ok {messages[-1].content}", usage=Usage(1, 1, 2), model="local"
        )


def test_429_pauses_every_worker() -> None:
    client = ScriptedClient(
        fail_first_with=RateLimited("slow down", status_code=429, retry_after=0.5)
    )
    result = executor_for(client, max_workers=4).execute_batch(questions(40))
    assert all(r.success for r in result.task_results)
    refused_at = client.starts[0]
    during_pause = [t for t in client.starts[1:] if refused_at + 0.05 < t < refused_at + 0.45]
    # At most the calls that had already passed the limiter when the 429 came back.
    assert len(during_pause) <= 3
    assert client.starts[-1] - refused_at >= 0.5
    assert result.metrics.rate_limited_responses == 1


class SlowFirstRefusal:
    """Every call takes 50 ms, like a real provider; the first is refused with a 429 asking
    for half a second. Records when each call starts and when the refusal came back."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.refused_at = 0.0
        self.lock = threading.Lock()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        with self.lock:
            self.starts.append(time.monotonic())
            first = len(self.starts) == 1
        time.sleep(0.05)
        if first:
            self.refused_at = time.monotonic()
            raise RateLimited("slow down", status_code=429, retry_after=0.5)
        return LLMResponse(content="ok", usage=Usage(1, 1, 2), model="local")


def test_429_pauses_every_worker_from_when_the_refusal_arrives() -> None:
    client = SlowFirstRefusal()
    result = executor_for(client, max_workers=4).execute_batch(questions(40))
    assert all(r.success for r in result.task_results)
    refused = client.refused_at
    started_during_pause = [t for t in client.starts if refused + 0.02 < t < refused + 0.48]
    assert started_during_pause == []  # not one worker went on calling
    assert max(client.starts) > refused + 0.5  # and the batch went on after it


def test_client_error_fails_at_once_with_the_providers_message(simulator: SimulatorFactory) -> None:
    sim = simulator(models=frozenset({"real/model"}))
    executor = executor_for(client_for(sim, model="no/such-model"), max_retries=5)
    result = executor.execute_batch(questions(6))
    assert not result.successful_results
    assert sim.stats.requests == 6  # no retry storm
    assert all("no/such-model" in (r.error or "") for r in result.failed_results)
    assert {r.error_type for r in result.failed_results} == {"ModelNotFound"}


def test_unparseable_output_is_retried(simulator: SimulatorFactory) -> None:
    seen: Counter[str] = Counter()

    def first_answer_is_garbage(request: dict[str, Any]) -> str:
        prompt = request["messages"][-1]["content"]
        seen[prompt] += 1
        return "not json" if seen[prompt] == 1 else json.dumps({"prompt": prompt})

    sim = simulator(responder=first_answer_is_garbage)
    tasks = [SimpleLLMTask(f"t{i}", f"p{i}", parse_fn=json.loads) for i in range(5)]
    result = executor_for(client_for(sim)).execute_batch(tasks)
    assert [r.result for r in result.task_results] == [{"prompt": f"p{i}"} for i in range(5)]
    assert all(r.retry_count == 1 for r in result.task_results)


def test_empty_and_malformed_bodies_are_retried(simulator: SimulatorFactory) -> None:
    sim = simulator(empty_rate=0.2, malformed_rate=0.2)
    result = executor_for(client_for(sim), max_retries=15).execute_batch(questions(50))
    assert_own_answers_in_order(result.task_results)
    assert result.metrics.total_retries > 0


def test_request_past_the_timeout_is_retried_then_reported(simulator: SimulatorFactory) -> None:
    sim = simulator(hang_rate=1.0, hang_seconds=5)
    result = executor_for(client_for(sim, timeout=0.2), max_retries=1).execute_batch(questions(2))
    assert [r.error_type for r in result.task_results] == ["ProviderTimeout"] * 2
    assert all(r.retry_count == 1 for r in result.task_results)


class Summary(BaseModel):
    title: str
    points: list[str]


class SummaryTask(LLMTask):
    response_model: ClassVar[type[BaseModel] | None] = Summary

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def task_id(self) -> str:
        return f"summary_{self.n}"

    def build_messages(self) -> list[LLMMessage]:
        return [LLMMessage(role="user", content=f"Summarise section {self.n}")]


def test_response_model_is_sent_as_schema_and_validated(simulator: SimulatorFactory) -> None:
    sim = simulator()
    result = executor_for(client_for(sim)).execute_batch([SummaryTask(i) for i in range(3)])
    assert all(isinstance(r.result, Summary) for r in result.task_results)


class FallbackTask(SummaryTask):
    def fallback(self, error: Exception) -> Summary:
        return Summary(title="needs review", points=[str(error)])


def test_fallback_is_used_and_reported_after_retries(simulator: SimulatorFactory) -> None:
    sim = simulator(error_rate=1.0)
    executor = executor_for(client_for(sim), max_retries=1)
    result = executor.execute_batch([FallbackTask(1)], checkpoint_name="fb")
    [task_result] = result.task_results
    assert task_result.success and task_result.used_fallback
    assert task_result.result.title == "needs review"
    assert result.metrics.fallback_tasks == 1
    # The checkpoint keeps it as failed, so a resume tries the real call again.
    assert result.checkpoint_path is not None
    assert (
        CheckpointManager("checkpoints").load(result.checkpoint_path).records["summary_1"].succeeded
        is False
    )


def test_duplicate_task_ids_are_refused_before_any_call(simulator: SimulatorFactory) -> None:
    sim = simulator()
    tasks = [SimpleLLMTask("same", "a"), SimpleLLMTask("same", "b")]
    with pytest.raises(TaskGraphError, match="same"):
        executor_for(client_for(sim)).execute_batch(tasks)
    assert sim.stats.requests == 0


class TimedClient:
    """Each call takes ``seconds``; records when calls start and how many overlap."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.starts: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        with self.lock:
            self.starts.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self.seconds)
        with self.lock:
            self.in_flight -= 1
        return LLMResponse(content=f"ok {messages[-1].content}", usage=Usage(1, 1, 2), model="m")


def test_each_finished_task_is_reported_as_it_finishes() -> None:
    client = TimedClient()
    reported: list[tuple[float, str]] = []
    executor_for(client, max_workers=2).execute_batch(
        questions(10), on_task_complete=lambda r: reported.append((time.monotonic(), r.task_id))
    )
    assert sorted(task_id for _, task_id in reported) == [f"q{i:04d}" for i in range(10)]
    first_report = min(t for t, _ in reported)
    assert first_report < max(client.starts)  # reported while later tasks had yet to start


def test_metrics_count_tokens_cost_and_latency(simulator: SimulatorFactory) -> None:
    sim = simulator(latency=0.01, announce=False)  # a provider that reports its cost
    result = executor_for(client_for(sim)).execute_batch(questions(20))
    m = result.metrics
    assert (m.total_tasks, m.completed_tasks, m.failed_tasks) == (20, 20, 0)
    assert m.total_tokens == m.prompt_tokens + m.completion_tokens > 0
    assert (
        m.total_cost == pytest.approx(sum(r.cost for r in result.task_results)) and m.total_cost > 0
    )
    assert 0.01 <= m.min_task_time <= m.p50_latency <= m.p95_latency <= m.max_task_time
    assert m.throughput > 0 and m.requests == 20
    assert result.success_rate == 100.0
    assert result.get_result_by_id("q0003") is result.task_results[3]


def test_cost_comes_from_the_price_table_when_the_provider_gives_none(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator(report_cost=False, announce=False)
    result = executor_for(client_for(sim, model="openai/gpt-4o-mini")).execute_batch(questions(1))
    [r] = result.task_results
    assert r.cost == pytest.approx((r.prompt_tokens * 0.15 + r.completion_tokens * 0.60) / 1e6)
    assert result.metrics.cost_by_model == {"openai/gpt-4o-mini": pytest.approx(r.cost)}


def test_settings_supply_the_executors_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AITA_MAX_WORKERS", "3")
    monkeypatch.setenv("AITA_RATE_LIMIT_RPS", "40")
    monkeypatch.setenv("AITA_ENABLE_CHECKPOINTING", "false")
    monkeypatch.setenv("AITA_CHECKPOINT_DIR", str(tmp_path / "cp"))
    from aita.config import get_config

    get_config.cache_clear()
    client = TimedClient(seconds=0.15)  # longer than 3 starts at 40/s: three overlap
    result = ParallelLLMExecutor(client, show_progress=False).execute_batch(questions(20))
    assert result.success_rate == 100.0
    assert client.max_in_flight == 3  # three workers
    starts = sorted(client.starts)
    assert starts[-1] - starts[0] >= 19 / 40 - 0.01  # no faster than 40 starts a second
    assert result.checkpoint_path is None and not (tmp_path / "cp").exists()  # none written


def test_ctrl_c_saves_finished_work_and_the_rerun_finishes(simulator: SimulatorFactory) -> None:
    sim = simulator(latency=0.05)
    executor = executor_for(client_for(sim), max_workers=4)
    finished: list[str] = []
    lock = threading.Lock()

    def press_ctrl_c_after_20(result: TaskResult) -> None:
        with lock:
            finished.append(result.task_id)
            if len(finished) == 20:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(BatchInterrupted) as caught:
        executor.execute_batch(
            questions(200), checkpoint_name="long", on_task_complete=press_ctrl_c_after_20
        )
    assert "checkpoint_name='long'" in str(caught.value)
    path = caught.value.checkpoint_path
    assert path is not None
    saved = CheckpointManager("checkpoints").load(path).succeeded
    assert 0 < len(saved) < 200
    before = sim.stats.requests
    result = executor.execute_batch(questions(200), checkpoint_name="long")
    assert_own_answers_in_order(result.task_results)
    assert sim.stats.requests - before <= 200 - len(saved)


def test_the_batch_never_writes_the_api_key(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    sentinel = "SENTINEL-API-KEY-0123456789abcdef"
    sim = simulator(api_key="sk-or-v1-the-real-key")  # refuses ours and echoes it back
    from aita.engine import create_openrouter_client

    client = create_openrouter_client(api_key=sentinel, base_url=sim.base_url)
    with caplog.at_level(logging.DEBUG):
        result = ParallelLLMExecutor(
            client,
            max_workers=2,
            rate_limit=None,
            show_progress=False,
            checkpoint_dir="checkpoints",
        ).execute_batch(questions(3), checkpoint_name="secret")
    assert 1 <= sim.stats.by_status[401] <= 2  # the calls in flight; the rest is cancelled
    assert {r.error_type for r in result.task_results} <= {"AuthenticationFailed", "Cancelled"}
    texts = [caplog.text, repr(client), repr(result)]
    texts += [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert not [t for t in texts if sentinel in t]


class RefusingClient(ScriptedClient):
    def __init__(self, refuse: str, seconds: float = 0.0) -> None:
        super().__init__()
        self.refuse = refuse
        self.seconds = seconds

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        with self.lock:
            self.starts.append(time.monotonic())
        time.sleep(self.seconds)
        if messages[-1].content == self.refuse:
            from aita.errors import BadRequest

            raise BadRequest("refused", status_code=400)
        return LLMResponse(content="ok", usage=Usage(1, 1, 2), model="local")


def test_fail_fast_cancels_what_has_not_started() -> None:
    client = RefusingClient("question 2")
    result = executor_for(client, max_workers=1).execute_batch(questions(10), fail_fast=True)
    kinds = [r.error_type for r in result.task_results]
    assert kinds == [None, None, "BadRequest"] + ["Cancelled"] * 7
    assert len(client.starts) == 3
    assert "fail_fast" in (result.task_results[5].error or "")


def test_timeout_cancels_the_rest_and_returns_every_result() -> None:
    client = RefusingClient("never", seconds=0.2)
    result = executor_for(client, max_workers=2).execute_batch(questions(20), timeout=0.3)
    assert len(result.task_results) == 20
    cancelled = [r for r in result.task_results if r.error_type == "Cancelled"]
    assert cancelled and len(client.starts) < 20
    assert len(client.starts) + len(cancelled) == 20


def test_on_task_start_is_called_once_per_task(simulator: SimulatorFactory) -> None:
    sim = simulator()
    started: list[str] = []
    executor_for(client_for(sim)).execute_batch(
        questions(5), on_task_start=lambda t: started.append(t.task_id)
    )
    assert sorted(started) == [f"q{i:04d}" for i in range(5)]
