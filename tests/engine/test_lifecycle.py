"""One task's lifecycle: a raise at any step is that task's failed result and the run goes on;
a journal that cannot be written stops the run within seconds, naming the file; no run waits on
a worker that died. Every run here is bounded in time by ``within``."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, TypeAdapter

from aita.engine import (
    CHAT_ENDPOINT,
    SIMULATED_HEADER,
    AuthenticationFailed,
    BadRequest,
    Checkpoint,
    CheckpointJournal,
    ExecutorSettings,
    Lifecycle,
    LLMMessage,
    LLMResponse,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    Prepared,
    ProviderOutage,
    ProviderUnavailable,
    ProviderUnreachable,
    QuotaSpent,
    RateLimited,
    ResponseCache,
    ResponseParseError,
    RetryPolicy,
    RunFailed,
    SimpleLLMTask,
    SpendLedger,
    TaskRecord,
    TaskResult,
    Telemetry,
    TruncatedResponse,
    Usage,
    estimate_prompt_tokens,
    request_key,
    with_correction,
)
from tests.support.doubles import SimulatorFactory, client_for, executor_for, questions

#: No run here may take longer than this: a hang fails the test instead of the suite.
BOUND = 30.0
FAULTY = "q0003"


def within(seconds: float, run: Callable[[], Any]) -> Any:
    """``run()``, failing if it has not ended within ``seconds`` (a hung run)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = run()
        except BaseException as error:  # re-raised in the test's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the run did not end within {seconds:g}s"
    if "error" in box:
        raise box["error"]
    return box["value"]


class Boom(Exception):
    """What a step raises here."""


class Hard(BaseException):
    """Not even an ``Exception``: a client may raise anything."""


class FaultyTask(SimpleLLMTask):
    """A task that raises at one step of its life (only the task ``FAULTY`` does)."""

    def __init__(self, task_id: str, prompt: str, step: str) -> None:
        super().__init__(task_id, prompt)
        self.step = step if task_id == FAULTY else ""

    def _maybe(self, step: str) -> None:
        if self.step == step:
            raise Boom(f"{step} failed\nwith a second line")

    def build_messages(self) -> list[LLMMessage]:
        self._maybe("build_messages")
        return super().build_messages()

    def get_llm_params(self) -> dict[str, Any]:
        self._maybe("get_llm_params")
        if self.step == "unkeyable":
            return {"extra": object()}  # no request key can hold it
        if self.step == "nested":
            deep: Any = []
            for _ in range(300):
                deep = [deep]
            return {"extra": deep}
        if self.step == "max_tokens":
            return {"max_tokens": "many"}
        return super().get_llm_params()

    def parse_response(self, response_text: str) -> Any:
        self._maybe("parse_response")
        if self.step == "fallback":
            raise Boom("does not parse, and the fallback fails too")
        return super().parse_response(response_text)

    def should_retry(self, error: Exception, retry_count: int) -> bool:
        self._maybe("should_retry")
        return super().should_retry(error, retry_count)

    def revise_messages(self, messages: list[LLMMessage], error: Exception) -> list[LLMMessage]:
        self._maybe("revise_messages")
        return super().revise_messages(messages, error)

    @property
    def has_fallback(self) -> bool:
        return self.step == "fallback"

    def fallback(self, error: Exception) -> Any:
        raise Boom("fallback failed")


class FaultyClient:
    """The simulator's client, but the task ``FAULTY``'s call raises ``raises`` or returns
    ``returns``."""

    def __init__(self, inner: OpenAICompatibleClient, raises: BaseException | None, returns: Any):
        self.inner = inner
        self.model = inner.model
        self.raises = raises
        self.returns = returns

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        if f"question {int(FAULTY[1:])}" == messages[-1].content:
            if self.raises is not None:
                raise self.raises
            return self.returns  # type: ignore[no-any-return]
        return self.inner.complete(messages, **params)


def faulty(n: int, step: str) -> list[FaultyTask]:
    return [FaultyTask(f"q{i:04d}", f"question {i}", step) for i in range(n)]


def run_both(executor: ParallelLLMExecutor, tasks: list[Any], mode: str) -> list[TaskResult]:
    if mode == "batch":
        return within(BOUND, lambda: executor.execute_batch(tasks).task_results)  # type: ignore[no-any-return]
    return within(BOUND, lambda: list(executor.execute_stream(tasks, checkpoint_name="s")))  # type: ignore[no-any-return]


def assert_only_faulty_failed(results: list[TaskResult], n: int) -> TaskResult:
    assert [r.task_id for r in results] == [f"q{i:04d}" for i in range(n)]
    bad = [r for r in results if not r.success]
    assert [r.task_id for r in bad] == [FAULTY], [(r.task_id, r.error) for r in bad]
    assert bad[0].error and "\n" not in bad[0].error  # a one-line reason
    return bad[0]


TASK_STEPS = [
    "build_messages",
    "get_llm_params",
    "unkeyable",
    "nested",
    "parse_response",
    "fallback",
]


@pytest.mark.parametrize("mode", ["batch", "stream"])
@pytest.mark.parametrize("step", TASK_STEPS)
def test_a_raise_at_any_step_of_a_task_fails_that_task_and_the_run_goes_on(
    simulator: SimulatorFactory, step: str, mode: str
) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim), max_retries=1)
    failed = assert_only_faulty_failed(run_both(executor, faulty(12, step), mode), 12)
    if step in ("build_messages", "get_llm_params"):
        assert failed.error == f"{step} failed with a second line"


@pytest.mark.parametrize("step", ["should_retry", "revise_messages"])
def test_a_raise_in_the_retry_decision_fails_that_task(
    simulator: SimulatorFactory, step: str
) -> None:
    """The faulty task's answer does not parse, so its retry decision runs and raises."""
    sim = simulator(responder=lambda request: "not json")
    tasks = [FaultyTask(f"q{i:04d}", f"question {i}", step) for i in range(6)]
    for task in tasks:
        task.parse_response = _json_only  # type: ignore[method-assign,assignment]
    results = run_both(executor_for(client_for(sim), max_retries=2), tasks, "batch")
    assert all(not r.success for r in results)  # none parses; none hangs
    assert len(results) == 6


def _json_only(text: str) -> Any:
    raise ValueError("not JSON")


@pytest.mark.parametrize("mode", ["batch", "stream"])
@pytest.mark.parametrize(
    ("raises", "returns"),
    [
        (RuntimeError("the client broke"), None),
        (Hard("not an Exception"), None),
        (None, "a string, not an LLMResponse"),
        (None, None),
    ],
    ids=["exception", "base-exception", "wrong-type", "none"],
)
def test_a_custom_client_raising_or_returning_anything_fails_only_that_task(
    simulator: SimulatorFactory, raises: BaseException | None, returns: Any, mode: str
) -> None:
    client = FaultyClient(client_for(simulator()), raises, returns)
    executor = executor_for(client, max_retries=1)
    assert_only_faulty_failed(run_both(executor, questions(10), mode), 10)


def test_a_token_budget_with_a_cap_that_is_not_a_count_fails_that_task_before_any_call(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator()
    executor = executor_for(client_for(sim), tokens_per_minute=1_000_000)
    failed = assert_only_faulty_failed(run_both(executor, faulty(8, "max_tokens"), "batch"), 8)
    assert "max_tokens" in (failed.error or "")
    assert sim.stats.requests == 7


@pytest.mark.parametrize("hook", ["on_task_start", "on_task_complete"])
def test_a_raising_hook_does_not_hang_the_run(simulator: SimulatorFactory, hook: str) -> None:
    def hooked(item: Any) -> None:
        if getattr(item, "task_id", None) == FAULTY:
            raise Boom(f"{hook} failed")

    executor = executor_for(client_for(simulator()))
    hooks: dict[str, Any] = {hook: hooked}
    result = within(BOUND, lambda: executor.execute_batch(questions(10), **hooks))
    assert len(result.task_results) == 10
    assert sum(not r.success for r in result.task_results) <= 1


def test_a_raising_journal_lookup_or_cache_read_asks_the_provider_instead(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator(announce=False)  # a simulated answer is never cached
    executor = executor_for(client_for(sim), cache="cache.sqlite")
    within(BOUND, lambda: executor.execute_batch(questions(6), checkpoint_name="x"))

    def broken(*args: Any) -> Any:
        raise Boom("unreadable")

    monkeypatch.setattr(Checkpoint, "answer_for", broken)
    monkeypatch.setattr(ResponseCache, "get", broken)
    result = within(BOUND, lambda: executor.execute_batch(questions(6), checkpoint_name="x"))
    assert all(r.success for r in result.task_results)
    assert sim.stats.requests == 12


def test_a_cache_row_whose_usage_is_not_json_is_a_miss(simulator: SimulatorFactory) -> None:
    sim = simulator(announce=False)
    executor = executor_for(client_for(sim), cache="cache.sqlite", enable_checkpointing=False)
    within(BOUND, lambda: executor.execute_batch(questions(5)))
    with sqlite3.connect("cache.sqlite") as db:
        db.execute("UPDATE responses SET usage = 'not json {'")
    again = executor_for(client_for(sim), cache="cache.sqlite", enable_checkpointing=False)
    result = within(BOUND, lambda: again.execute_batch(questions(5)))
    assert all(r.success for r in result.task_results)
    assert sim.stats.requests == 10  # asked again, and the rows are good again
    third = executor_for(client_for(sim), cache="cache.sqlite", enable_checkpointing=False)
    assert all(
        r.cached for r in within(BOUND, lambda: third.execute_batch(questions(5))).task_results
    )


def test_a_raising_ledger_fails_only_the_task_whose_write_raised(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SpendLedger.record
    seen: list[int] = []

    def record(self: SpendLedger, **entry: Any) -> None:
        seen.append(1)
        if len(seen) == 3:
            raise Boom("ledger broke")
        original(self, **entry)

    monkeypatch.setattr(SpendLedger, "record", record)
    executor = executor_for(client_for(simulator(announce=False)), max_retries=0)
    result = within(BOUND, lambda: executor.execute_batch(questions(10)))
    assert sum(not r.success for r in result.task_results) == 1


class FailingLimiter:
    """A rate limiter that raises for its third caller."""

    rate = None
    tokens_per_minute = None

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def acquire(self, tokens: int = 0) -> float:
        with self.lock:
            self.calls += 1
            if self.calls == 3:
                raise Boom("limiter broke")
        return 0.0

    def pause(self, seconds: float) -> None: ...
    def correct(self, tokens: int) -> None: ...


def test_a_raising_limiter_fails_only_that_task(simulator: SimulatorFactory) -> None:
    executor = executor_for(
        client_for(simulator()), rate_limiter=FailingLimiter(), adaptive_rate=False
    )
    result = within(BOUND, lambda: executor.execute_batch(questions(10)))
    assert sum(not r.success for r in result.task_results) == 1


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_a_journal_that_cannot_be_written_stops_the_run_naming_the_file(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The disk fills after a few records: the run stops within seconds with RunFailed naming the
    journal and the cause, and what was saved resumes."""
    real_write = os.write
    journal_writes = [0]

    def write(fd: int, data: bytes) -> int:
        if data.startswith(b'{"task_id"'):
            journal_writes[0] += 1
            if journal_writes[0] > 5:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    sim = simulator(latency=0.005)
    executor = executor_for(client_for(sim), max_workers=4)
    monkeypatch.setattr(os, "write", write)
    started = time.monotonic()
    with pytest.raises(RunFailed) as raised:
        run_both(executor, questions(200), mode)
    assert time.monotonic() - started < 15
    assert "checkpoint" in str(raised.value) and "No space left on device" in str(raised.value)
    assert sim.stats.requests < 200
    monkeypatch.setattr(os, "write", real_write)
    again = executor_for(client_for(sim), max_workers=4)
    before = sim.stats.requests
    results = run_both(again, questions(200), mode)
    assert all(r.success for r in results)
    assert sim.stats.requests - before <= 200 - 5  # the five saved are reused


def test_a_journal_folder_that_cannot_be_created_is_run_failed(simulator: SimulatorFactory) -> None:
    Path("blocked").write_text("a file where the folder should be")
    executor = executor_for(client_for(simulator()), checkpoint_dir="blocked/checkpoints")
    with pytest.raises(RunFailed, match="blocked"):
        within(BOUND, lambda: executor.execute_batch(questions(3)))


def test_two_batches_run_on_one_executor_at_once(simulator: SimulatorFactory) -> None:
    sim = simulator(latency=0.01)
    executor = executor_for(client_for(sim), max_workers=4)
    results: dict[str, list[TaskResult]] = {}

    def run(name: str, prefix: str) -> None:
        results[name] = executor.execute_batch(
            questions(30, prefix), checkpoint_name=name
        ).task_results

    threads = [
        threading.Thread(target=run, args=(n, p)) for n, p in (("a", "first"), ("b", "second"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert not any(t.is_alive() for t in threads)
    assert [r.result for r in results["a"]] == [f"[sim] first {i}" for i in range(30)]
    assert [r.result for r in results["b"]] == [f"[sim] second {i}" for i in range(30)]


def test_the_executor_takes_one_settings_object(simulator: SimulatorFactory) -> None:
    settings = ExecutorSettings.resolve(
        max_workers=3, rate_limit=None, show_progress=False, max_batch_size=1
    )
    executor = ParallelLLMExecutor(client_for(simulator()), settings=settings)
    assert (executor.max_workers, executor.max_batch_size) == (3, 1)
    result = within(BOUND, lambda: executor.execute_batch(questions(5)))
    assert all(r.success for r in result.task_results)


def test_task_results_say_their_outcome_and_source_and_keep_the_old_views() -> None:
    legacy = TaskResult(task_id="t", success=True, from_checkpoint=True, batched=True)
    assert (legacy.outcome, legacy.source, legacy.combined) == ("done", "journal", True)
    assert legacy.success and legacy.from_checkpoint and legacy.batched and not legacy.cached
    fallback = TaskResult(task_id="t", success=True, used_fallback=True, error="boom")
    assert (fallback.outcome, fallback.used_fallback) == ("flagged", True)
    skipped = TaskResult(task_id="t", success=False, error_type="DependencyFailed")
    assert (skipped.outcome, skipped.success) == ("skipped", False)
    cut = TaskResult(task_id="t", outcome="flagged", source="cache", finish_reason="length")
    assert cut.success and cut.cached and not cut.used_fallback
    with pytest.raises(AttributeError):
        cut.success = False  # type: ignore[misc]


# -- the steps on their own: no driver, no network ------------------------------------------------

KEY = "sk-" + "lifecycle-secret-0123456789"  # key-shaped at run time only


def _redact(text: str) -> str:
    return text.replace(KEY, "[redacted]")


def life_of(tmp_path: Path, **changes: Any) -> Lifecycle:
    fields: dict[str, Any] = {
        "name": "job",
        "model": "base/model",
        "retry_policy": RetryPolicy(2, lambda attempt: 0.25 * (attempt + 1)),
        "redact": _redact,
    }
    fields.update(changes)
    return Lifecycle(**fields)


def step_of(life: Lifecycle, task: Any) -> Prepared:
    step = life.prepare(task)
    assert isinstance(step, Prepared), step
    return step


def answer(content: str = "the answer", **changes: Any) -> LLMResponse:
    fields: dict[str, Any] = {
        "content": content,
        "usage": Usage(10, 5, 15),
        "model": "answering/model",
        "finish_reason": "stop",
    }
    fields.update(changes)
    return LLMResponse(**fields)


def ledger_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prepare_builds_the_request_its_key_and_its_batch_line(tmp_path: Path) -> None:
    life = life_of(tmp_path)
    task = SimpleLLMTask("t", "hello", temperature=0.5)
    step = step_of(life, task)
    assert step.task is task and step.attempt == 0 and step.estimate == 0
    assert step.messages == task.build_messages()
    assert step.params == task.request_params()
    assert step.key == request_key("base/model", step.messages, step.params, task.version)
    assert step.run.key == step.key
    assert step.model == "base/model"
    body = {"model": "base/model", "messages": [m.to_openai() for m in step.messages]}
    body.update({k: v for k, v in step.params.items() if k != "model"})
    assert step.body == body
    assert step.line() == {
        "custom_id": "t",
        "method": "POST",
        "url": CHAT_ENDPOINT,
        "body": body,
    }
    own = step_of(life, SimpleLLMTask("u", "hello", model="other/model"))
    assert own.model == "other/model" and own.body["model"] == "other/model"
    assert own.key != request_key("base/model", own.messages, {}, None)


@pytest.mark.parametrize(
    ("params", "expected"),
    [({}, None), ({"max_tokens": 7}, 7), ({"max_completion_tokens": 9}, 9)],
)
def test_with_a_token_budget_each_attempt_reserves_the_prompt_and_the_answers_cap(
    tmp_path: Path, params: dict[str, Any], expected: int | None
) -> None:
    life = life_of(tmp_path, token_budget=True)
    task = SimpleLLMTask("t", "a prompt of some words", **params)
    step = step_of(life, task)
    cap = expected if expected is not None else task.expected_output_tokens
    assert step.estimate == estimate_prompt_tokens(step.messages) + cap


@pytest.mark.parametrize("cap", ["many", True, 2.5])
def test_a_cap_that_is_not_a_count_fails_the_task_in_prepare(tmp_path: Path, cap: Any) -> None:
    life = life_of(tmp_path, token_budget=True)
    failed = life.prepare(SimpleLLMTask("t", "p", max_tokens=cap))
    assert isinstance(failed, TaskResult)
    assert failed.outcome == "failed" and failed.error_type == "ValueError"
    assert failed.error == f"max_tokens must be a whole number, not {cap!r}"
    assert isinstance(life_of(tmp_path).prepare(SimpleLLMTask("t", "p", max_tokens=cap)), Prepared)


def test_a_request_no_json_can_hold_fails_in_prepare_saying_so(tmp_path: Path) -> None:
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    failed = life_of(tmp_path).prepare(SimpleLLMTask("t", "p", extra=deep))
    assert isinstance(failed, TaskResult) and failed.outcome == "failed"
    assert failed.error == "the request cannot be written as JSON (Recursion limit reached)"


def test_look_back_reuses_the_journal_then_the_cache_and_counts_each_task_once(
    tmp_path: Path,
) -> None:
    task = SimpleLLMTask("t", "p")
    probe = step_of(life_of(tmp_path), task)
    record = TaskRecord(task_id="t", succeeded=True, raw_response="ANSWER", key=probe.key)
    life = life_of(tmp_path, lookup=Checkpoint(name="job", records={"t": record}))
    step = step_of(life, task)
    reused = life.look_back(step)
    assert reused is not None and reused.source == "journal" and reused.result == "ANSWER"
    assert life.look_back(step) is not None
    assert life.progress.counts.reused == 1  # counted the first time only
    assert life.look_back(step, journal=False) is None  # a combined call has no record
    other = step_of(life, SimpleLLMTask("u", "p"))
    assert life.look_back(other) is None and life.progress.counts.new == 1


def test_look_back_answers_from_the_cache_at_no_cost(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    ledger = SpendLedger(tmp_path / "spend.jsonl")
    life = life_of(tmp_path, cache=cache, ledger=ledger)
    step = step_of(life, SimpleLLMTask("t", "p"))
    assert life.look_back(step) is None
    cache.put(step.key, answer("cached", model=f"\x1b[31m{KEY}" + "m" * 500))
    cached = life.look_back(step)
    assert cached is not None and cached.source == "cache" and cached.result == "cached"
    assert (cached.cost, cached.tokens, cached.outcome) == (0.0, 0, "done")
    assert life.progress.counts.cached == 1
    [line] = ledger_lines(tmp_path / "spend.jsonl")
    assert line["cached"] is True and line["cost"] == 0.0 and line["batch"] == "job"
    assert (line["prompt_tokens"], line["completion_tokens"]) == (0, 0)
    assert KEY not in line["model"] and "\x1b" not in line["model"]
    assert len(line["model"]) == 200


def test_a_cached_answer_its_parser_now_refuses_is_asked_again(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    life = life_of(tmp_path, cache=cache)
    task = SimpleLLMTask("t", "p", parse_fn=_json_only)
    step = step_of(life, task)
    cache.put(step.key, answer("not json"))
    assert life.look_back(step) is None


def test_settle_an_answer_counts_pays_parses_and_caches_it(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    ledger = SpendLedger(tmp_path / "spend.jsonl")
    prices = {"answering/model": (1_000_000.0, 2_000_000.0)}
    life = life_of(tmp_path, cache=cache, ledger=ledger, prices=prices)
    step = step_of(life, SimpleLLMTask("t", "p"))
    settled = life.settle(step, response=answer(f"say {KEY}"), seconds=0.5, waited=0.25)
    result = settled.result
    assert result is not None and settled.decision is None and settled.error is None
    assert settled.reached
    assert (result.outcome, result.source, result.result) == ("done", "call", "say [redacted]")
    assert result.raw_response == "say [redacted]"
    assert result.model == "answering/model"
    assert (result.prompt_tokens, result.completion_tokens, result.tokens) == (10, 5, 15)
    assert result.cost == pytest.approx(20.0) and result.call_time == 0.5
    assert result.request_key == step.key and result.retry_count == 0
    counts = life.progress.counts
    assert (counts.requests, counts.limiter_wait, counts.unpriced, counts.retries) == (
        1,
        0.25,
        0,
        0,
    )
    [line] = ledger_lines(tmp_path / "spend.jsonl")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (10, 5)
    assert line["cost"] == pytest.approx(20.0) and line["cached"] is False
    assert line["model"] == result.model
    stored = cache.get(step.key)
    assert stored is not None and stored.content == "say [redacted]"
    odd = step_of(life, SimpleLLMTask("u", "p"))
    named = life.settle(odd, response=answer(model=f"\x1b[31m{KEY}" + "m" * 500)).result
    assert named is not None and named.model is not None
    assert KEY not in named.model and "\x1b" not in named.model and len(named.model) == 200
    assert ledger_lines(tmp_path / "spend.jsonl")[-1]["model"] == named.model


def test_a_simulated_answer_is_neither_spend_nor_cached(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    ledger = SpendLedger(tmp_path / "spend.jsonl")
    life = life_of(tmp_path, cache=cache, ledger=ledger)
    step = step_of(life, SimpleLLMTask("t", "p"))
    simulated = answer(headers={SIMULATED_HEADER: "true"})
    result = life.settle(step, response=simulated).result
    assert result is not None and result.simulated and result.success
    assert not (tmp_path / "spend.jsonl").exists()
    assert cache.get(step.key) is None
    assert life.progress.counts.simulated == 1 and life.progress.counts.unpriced == 0


def test_a_simulated_answer_costs_nothing_whatever_its_usage_says(tmp_path: Path) -> None:
    life = life_of(tmp_path, prices={"answering/model": (1e6, 1e6)})
    step = step_of(life, SimpleLLMTask("t", "p"))
    told = answer(usage=Usage(10, 5, 15, cost=0.5), headers={SIMULATED_HEADER: "true"})
    result = life.settle(step, response=told).result
    assert result is not None and result.simulated and result.cost == 0.0
    unpriced = answer(model="nobody/knows", headers={SIMULATED_HEADER: "true"})
    other = life.settle(step_of(life, SimpleLLMTask("u", "p")), response=unpriced).result
    assert other is not None and other.cost == 0.0 and life.progress.counts.unpriced == 0


def test_the_cache_answers_only_for_the_server_it_was_asked_of(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    first = life_of(tmp_path, cache=cache, server="http://127.0.0.1:1/v1")
    task = SimpleLLMTask("t", "p")
    assert first.settle(step_of(first, task), response=answer("from one")).result is not None
    other = life_of(tmp_path, cache=cache, server="http://127.0.0.1:2/v1")
    assert other.look_back(step_of(other, task)) is None
    again = life_of(tmp_path, cache=cache, server="http://127.0.0.1:1/v1")
    cached = again.look_back(step_of(again, task))
    assert cached is not None and cached.source == "cache" and cached.result == "from one"


def test_an_answer_at_an_unknown_price_is_counted_as_such(tmp_path: Path) -> None:
    life = life_of(tmp_path)
    step = step_of(life, SimpleLLMTask("t", "p"))
    result = life.settle(step, response=answer(model="nobody/knows")).result
    assert result is not None and result.cost == 0.0
    assert life.progress.counts.unpriced == 1


def test_the_batch_price_is_the_discount_of_the_listed_one_unless_the_provider_says(
    tmp_path: Path,
) -> None:
    prices = {"answering/model": (1_000_000.0, 2_000_000.0)}
    life = life_of(tmp_path, prices=prices, discount=0.5)
    listed = life.settle(step_of(life, SimpleLLMTask("t", "p")), response=answer()).result
    assert listed is not None and listed.cost == pytest.approx(10.0)
    told = answer(usage=Usage(10, 5, 15, cost=3.0))
    given = life.settle(step_of(life, SimpleLLMTask("u", "p")), response=told).result
    assert given is not None and given.cost == pytest.approx(3.0)


def test_a_cut_off_answer_is_flagged_or_an_error_if_the_task_says_so(tmp_path: Path) -> None:
    life = life_of(tmp_path)
    cut = answer(finish_reason="length")
    flagged = life.settle(step_of(life, SimpleLLMTask("t", "p")), response=cut).result
    assert flagged is not None and flagged.outcome == "flagged" and not flagged.used_fallback
    assert life.progress.counts.truncated == 1
    step = step_of(life, Strict("u", "p"))
    settled = life.settle(step, response=answer(finish_reason="length"))
    assert isinstance(settled.error, TruncatedResponse)
    assert settled.result is not None and settled.result.outcome == "failed"
    assert settled.result.error_type == "TruncatedResponse"
    assert life.progress.counts.truncated == 2


class Strict(SimpleLLMTask):
    truncation_is_error = True


def test_an_answer_that_does_not_parse_is_asked_again_with_the_error_then_fails(
    tmp_path: Path,
) -> None:
    life = life_of(tmp_path)
    step = step_of(life, SimpleLLMTask("t", "p", parse_fn=_json_only))
    first = life.settle(step, response=answer("nope"))
    assert first.result is None and first.reached
    assert isinstance(first.error, ResponseParseError)
    assert str(first.error) == "could not parse the response: not JSON"
    assert first.decision is not None and first.decision.retry
    assert first.decision.delay == 0.25
    assert step.attempt == 1
    assert life.settle(step, response=answer("nope")).result is None
    last = life.settle(step, response=answer("nope"))
    assert last.result is not None and last.result.outcome == "failed"
    assert last.result.retry_count == 2 and last.result.raw_response == "nope"
    assert last.result.tokens == 45  # every attempt was paid for
    assert last.decision is not None and not last.decision.retry
    assert life.progress.counts.retries == 2 and life.progress.counts.requests == 3


def test_settle_an_error_follows_the_retry_policy(tmp_path: Path) -> None:
    life = life_of(tmp_path)
    step = step_of(life, SimpleLLMTask("t", "p"))
    busy = life.settle(step, error=ProviderUnavailable("busy", status_code=500), seconds=0.5)
    assert busy.result is None and busy.reached and step.attempt == 1
    assert busy.decision is not None and busy.decision.retry and not busy.decision.outage
    down = life.settle(step, error=ProviderUnreachable("cannot reach x: refused"))
    assert down.result is None and not down.reached
    assert down.decision is not None and down.decision.outage
    assert step.attempt == 1  # an outage spends no retry
    refused = life.settle(step, error=AuthenticationFailed("no", status_code=401))
    assert refused.result is not None and refused.result.outcome == "failed"
    assert refused.decision is not None and refused.decision.stop_batch
    assert refused.result.call_time == 0.5 and refused.result.retry_count == 1
    assert refused.result.error_type == "AuthenticationFailed"


def test_a_wait_longer_than_the_outage_budget_fails_the_task_as_a_spent_quota(
    tmp_path: Path,
) -> None:
    life = life_of(tmp_path, retry_policy=RetryPolicy(2, longest_wait=60.0))
    step = step_of(life, SimpleLLMTask("t", "p"))
    limited = RateLimited("slow down", status_code=429, retry_after=7200.0)
    settled = life.settle(step, error=limited)
    assert settled.result is not None and settled.result.outcome == "failed"
    assert settled.result.error_type == "QuotaSpent" and settled.result.retry_count == 0
    assert isinstance(settled.result.exception, QuotaSpent)
    assert "wait 7200s (2.0 h) (retry-after)" in (settled.result.error or "")
    assert settled.decision is not None and settled.decision.stop_batch
    assert settled.decision.stop_reason == f"cancelled: {settled.result.exception}"
    assert settled.error is limited and settled.reached  # the provider answered


def test_a_failed_task_says_why_in_one_redacted_bounded_line(tmp_path: Path) -> None:
    life = life_of(tmp_path)
    step = step_of(life, SimpleLLMTask("t", "p"))
    long = RuntimeError(f"first {KEY}\nsecond " + "x" * 5000)
    result = life.settle(step, error=long).result
    assert result is not None and result.error is not None
    assert KEY not in result.error and "\n" not in result.error
    assert result.error.startswith("first [redacted] second ")
    assert len(result.error) == 1000 and result.error.endswith("…")
    assert result.exception is long
    nothing = life.settle(step_of(life, SimpleLLMTask("u", "p")))
    assert nothing.result is not None and nothing.result.error_type == "ProviderError"


def test_a_fallback_stands_in_when_the_task_gives_up(tmp_path: Path) -> None:
    class WithFallback(SimpleLLMTask):
        @property
        def has_fallback(self) -> bool:
            return True

        def fallback(self, error: Exception) -> Any:
            return f"fallback for {type(error).__name__}"

    life = life_of(tmp_path)
    step = step_of(life, WithFallback("t", "p"))
    result = life.settle(step, error=BadRequest("no", status_code=400)).result
    assert result is not None and result.outcome == "flagged" and result.used_fallback
    assert result.result == "fallback for BadRequest" and result.error is not None
    gave_up = life.give_up(step_of(life, WithFallback("u", "p")), ProviderOutage("down"))
    assert gave_up.used_fallback and gave_up.result == "fallback for ProviderOutage"
    contained = life.failed(step.task, RuntimeError(f"bug {KEY}"), step)
    assert contained.outcome == "failed" and not contained.used_fallback
    assert contained.error == "bug [redacted]" and contained.request_key == step.key
    alone = life.failed(step.task, RuntimeError("bug"))
    assert alone.retry_count == 0 and alone.request_key is None


def test_finish_journals_then_shows_and_tells_the_caller(tmp_path: Path) -> None:
    seen: list[TaskResult] = []
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"")
    journal = CheckpointJournal(path)
    life = life_of(tmp_path, journal=journal, on_task_complete=seen.append)
    done = TaskResult(task_id="t", outcome="done", raw_response="a", request_key="k")
    reused = TaskResult(task_id="u", outcome="done", source="journal")
    life.finish(done)
    life.finish(reused)
    journal.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["task_id"] for line in lines] == ["t"]  # a reused one is there already
    assert seen == [done, reused] and life.progress.succeeded == 2


def test_a_callback_that_raises_is_logged_but_a_run_failure_stops_the_run(tmp_path: Path) -> None:
    def broken(result: TaskResult) -> None:
        raise Boom("callback")

    life = life_of(tmp_path, on_task_complete=broken)
    life.finish(TaskResult(task_id="t", outcome="done"))

    def full(result: TaskResult) -> None:
        raise RunFailed("out.jsonl: cannot write")

    life = life_of(tmp_path, on_task_complete=full)
    with pytest.raises(RunFailed, match=r"out\.jsonl"):
        life.finish(TaskResult(task_id="t", outcome="done"))


def test_a_journal_that_cannot_be_written_is_run_failed_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"")
    journal = CheckpointJournal(path)

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    life = life_of(tmp_path, journal=journal)
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(RunFailed) as raised:
        life.record(TaskResult(task_id="t", outcome="done"))
    assert str(raised.value) == (
        f"{path}: cannot write (No space left on device); the tasks saved before resume"
    )
    assert isinstance(raised.value.__cause__, OSError)


def test_a_parse_failure_names_the_field_of_a_model_and_a_cut_off_answer(tmp_path: Path) -> None:
    class Answer(BaseModel):
        score: int

    def failure(parse_fn: Any, response: LLMResponse) -> BaseException | None:
        life = life_of(tmp_path)
        return life.settle(
            step_of(life, SimpleLLMTask("t", "p", parse_fn=parse_fn)), response=response
        ).error

    error = failure(Answer.model_validate_json, answer('{"score": "high"}'))
    assert isinstance(error, ResponseParseError)
    assert str(error).startswith("could not parse the response: score: ")
    assert "high" not in str(error)  # the answer's value is not repeated
    assert error.raw_response == '{"score": "high"}'
    cut = failure(_json_only, answer("x", finish_reason="length"))
    assert (
        str(cut)
        == "could not parse the response: not JSON (the answer was cut off at the token limit)"
    )
    assert str(failure(_empty_error, answer("x"))) == "could not parse the response: ValueError"


def _empty_error(text: str) -> Any:
    raise ValueError()


def test_what_a_step_contains_it_logs_naming_the_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Unreadable:
        def answer_for(self, task: Any, key: str) -> Any:
            raise Boom("unreadable")

    class BrokenCache(ResponseCache):
        def get(self, key: str, server: str = "") -> LLMResponse | None:
            raise Boom("corrupt")

    life = life_of(tmp_path, lookup=Unreadable(), cache=BrokenCache(tmp_path / "c.sqlite"))
    step = step_of(life, SimpleLLMTask("t", "p"))
    assert life.look_back(step) is None
    assert caplog.messages == [
        "task t: its journal record does not read (unreadable)",
        "task t: the cached answer does not read (corrupt)",
    ]
    caplog.clear()
    life.failed(step.task, RuntimeError(f"bug {KEY}"), step)
    assert caplog.messages == ["task t failed: bug [redacted]"]
    caplog.clear()

    def broken(result: TaskResult) -> None:
        raise Boom("callback")

    life_of(tmp_path, on_task_complete=broken).finish(TaskResult(task_id="t", outcome="done"))
    assert caplog.messages == ["on_task_complete failed for task t"]


def test_looking_back_without_a_journal_or_cache_is_quiet_and_counts_new_tasks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    life = life_of(tmp_path, cache=ResponseCache(tmp_path / "c.sqlite"))
    step = step_of(life, SimpleLLMTask("t", "p"))
    assert life.look_back(step) is None
    assert life.progress.counts.new == 1 and caplog.messages == []
    life.finish(TaskResult(task_id="t", outcome="failed", error="x"))
    assert life.look_back(step) is None
    assert life.progress.counts.new == 2  # a task that ended and comes again counts again


def test_the_journals_answer_wins_over_the_caches(tmp_path: Path) -> None:
    task = SimpleLLMTask("t", "p")
    cache = ResponseCache(tmp_path / "c.sqlite")
    key = step_of(life_of(tmp_path), task).key
    record = TaskRecord(task_id="t", succeeded=True, raw_response="JOURNAL", key=key)
    cache.put(key, answer("CACHE"))
    life = life_of(tmp_path, lookup=Checkpoint(name="job", records={"t": record}), cache=cache)
    reused = life.look_back(step_of(life, task))
    assert reused is not None and (reused.source, reused.result) == ("journal", "JOURNAL")
    assert life.progress.counts.cached == 0


def test_a_fallback_keeps_the_redacted_error_and_the_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class WithFallback(SimpleLLMTask):
        @property
        def has_fallback(self) -> bool:
            return True

        def fallback(self, error: Exception) -> Any:
            return "stand-in"

    class FailingFallback(WithFallback):
        def fallback(self, error: Exception) -> Any:
            raise Boom("no stand-in")

    life = life_of(tmp_path)
    step = step_of(life, WithFallback("t", "p"))
    assert life.settle(step, error=ProviderUnavailable("busy", status_code=500)).result is None
    result = life.give_up(step, RuntimeError(f"gave up {KEY}"))
    assert (result.outcome, result.result, result.retry_count) == ("flagged", "stand-in", 1)
    assert result.error == "gave up [redacted]" and result.error_type == "RuntimeError"
    assert caplog.messages == []
    failing = step_of(life, FailingFallback("u", "p"))
    failed = life.give_up(failing, RuntimeError("gave up"))
    assert failed.outcome == "failed" and failed.error_type == "RuntimeError"
    assert caplog.messages == ["fallback of task u failed: no stand-in"]
    caplog.clear()
    plain = life.give_up(step_of(life, SimpleLLMTask("v", "p")), RuntimeError("gave up"))
    assert plain.outcome == "failed" and caplog.messages == []


def test_a_contained_failure_keeps_the_attempts_and_names_an_empty_error_by_type(
    tmp_path: Path,
) -> None:
    life = life_of(tmp_path)
    step = step_of(life, SimpleLLMTask("t", "p"))
    life.settle(step, error=ProviderUnavailable("busy", status_code=500))
    contained = life.failed(step.task, ValueError(), step)
    assert (contained.error, contained.error_type, contained.retry_count) == (
        "ValueError",
        "ValueError",
        1,
    )


def test_settle_adds_up_call_time_and_counts_each_attempt_as_it_went(tmp_path: Path) -> None:
    life = life_of(tmp_path, ledger=SpendLedger(tmp_path / "spend.jsonl"))
    step = step_of(life, SimpleLLMTask("t", "p"))
    limited = RateLimited("slow down", status_code=429)
    first = life.settle(step, error=limited, seconds=0.5, waited=0.125)
    assert first.reached and first.decision is not None and first.decision.pause_all
    done = life.settle(step, response=answer(model=""), seconds=0.25, waited=0.5)
    assert done.result is not None and done.result.call_time == 0.75
    assert done.result.retry_count == 1 and done.result.model == ""
    counts = life.progress.counts
    assert (counts.requests, counts.retries, counts.rate_limited) == (2, 1, 1)
    assert counts.limiter_wait == 0.625
    [line] = ledger_lines(tmp_path / "spend.jsonl")
    assert (line["batch"], line["model"]) == ("job", "base/model")  # the model asked for


def test_an_answer_with_no_text_or_an_odd_model_name_is_taken_as_it_is(tmp_path: Path) -> None:
    life = life_of(tmp_path)
    empty = life.settle(step_of(life, SimpleLLMTask("t", "p")), response=answer(""))
    assert empty.result is not None and empty.result.result == ""
    odd = life.settle(step_of(life, SimpleLLMTask("u", "p")), response=answer(model=123))
    assert odd.result is not None and odd.result.model == ""


def test_a_task_whose_retry_decision_raises_fails_with_the_error_it_had(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Undecided(SimpleLLMTask):
        def should_retry(self, error: Exception, retry_count: int) -> bool:
            raise Boom("cannot decide")

    class Unrevisable(SimpleLLMTask):
        def revise_messages(self, messages: list[LLMMessage], error: Exception) -> list[LLMMessage]:
            raise Boom("cannot revise")

    life = life_of(tmp_path)
    busy = ProviderUnavailable("busy", status_code=500)
    undecided = life.settle(step_of(life, Undecided("t", "p")), error=busy)
    assert undecided.result is not None and undecided.result.error_type == "ProviderUnavailable"
    assert undecided.decision is not None and not undecided.decision.retry
    assert undecided.reached
    assert caplog.messages == ["should_retry of task t failed: cannot decide"]
    unrevisable = life.settle(step_of(life, Unrevisable("u", "p")), error=busy)
    assert unrevisable.result is not None and unrevisable.result.error == "cannot revise"
    assert unrevisable.error is not None and str(unrevisable.error) == "cannot revise"
    assert unrevisable.decision is not None and not unrevisable.decision.retry
    gone = life.settle(step_of(life, Undecided("v", "p")), error=ConnectionError("gone"))
    assert gone.result is not None and not gone.reached
    nothing = life.settle(step_of(life, SimpleLLMTask("w", "p")))
    assert (
        str(nothing.error) == "provider error: the client returned neither an answer nor an error"
    )


def test_a_failed_prepare_has_made_no_attempt(tmp_path: Path) -> None:
    class Broken(SimpleLLMTask):
        def build_messages(self) -> list[LLMMessage]:
            raise Boom("no messages")

    failed = life_of(tmp_path).prepare(Broken("t", "p"))
    assert isinstance(failed, TaskResult)
    assert (failed.retry_count, failed.error, failed.tokens) == (0, "no messages", 0)


def test_a_parse_failure_says_its_first_line_or_the_whole_problem(tmp_path: Path) -> None:
    def failure(parse_fn: Any) -> str:
        life = life_of(tmp_path)
        step = step_of(life, SimpleLLMTask("t", "p", parse_fn=parse_fn))
        return str(life.settle(step, response=answer("x")).error)

    def two_lines(text: str) -> Any:
        raise ValueError("first line\nsecond line")

    assert failure(two_lines) == "could not parse the response: first line"
    whole = failure(TypeAdapter(int).validate_json)
    assert whole.startswith("could not parse the response: Invalid JSON")


def test_a_task_version_is_part_of_its_request_key(tmp_path: Path) -> None:
    class Versioned(SimpleLLMTask):
        version = 2

    life = life_of(tmp_path)
    plain = step_of(life, SimpleLLMTask("t", "p"))
    versioned = step_of(life, Versioned("t", "p"))
    assert versioned.key != plain.key
    assert versioned.key == request_key("base/model", versioned.messages, versioned.params, 2)


def test_an_attempt_is_revised_with_the_error_it_failed_with(tmp_path: Path) -> None:
    class Corrected(SimpleLLMTask):
        def revise_messages(self, messages: list[LLMMessage], error: Exception) -> list[LLMMessage]:
            return with_correction(messages, error)

    life = life_of(tmp_path)
    step = step_of(life, Corrected("t", "p", parse_fn=_json_only))
    assert life.settle(step, response=answer("nope")).result is None
    assert [m.content for m in step.messages] == [
        "p",
        "nope",
        "That answer was rejected: could not parse the response: not JSON. "
        "Answer again, fixing exactly this.",
    ]


def test_an_answer_a_client_gives_without_text_reads_as_empty(tmp_path: Path) -> None:
    """A custom client's ``content=None``: taken as no text, never handed to the redaction."""
    life = life_of(tmp_path)
    settled = life.settle(step_of(life, SimpleLLMTask("t", "p")), response=answer(cast(Any, None)))
    assert settled.result is not None and settled.result.success
    assert settled.result.result == "" and settled.result.raw_response == ""


def test_a_cut_off_answer_says_so_in_its_error_or_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    life = life_of(tmp_path)
    strict = life.settle(step_of(life, Strict("t", "p")), response=answer(finish_reason="length"))
    message = "the answer was cut off at the token limit (finish_reason=length)"
    assert str(strict.error) == message
    assert strict.result is not None and strict.result.error == message
    assert caplog.messages == []
    life.settle(step_of(life, SimpleLLMTask("u", "p")), response=answer(finish_reason="length"))
    assert caplog.messages == ["task u: the answer was cut off at the token limit"]


def test_a_contained_failure_before_any_request_keeps_the_error_redacted(tmp_path: Path) -> None:
    life = life_of(tmp_path)
    error = RuntimeError(f"bug {KEY}")
    alone = life.failed(SimpleLLMTask("t", "p"), error)
    assert (alone.outcome, alone.error, alone.error_type) == (
        "failed",
        "bug [redacted]",
        "RuntimeError",
    )
    assert alone.exception is error and (alone.cost, alone.tokens) == (0.0, 0)


def test_settle_counts_no_limiter_wait_unless_told(tmp_path: Path) -> None:
    life = life_of(tmp_path)
    life.settle(step_of(life, SimpleLLMTask("t", "p")), response=answer())
    life.settle(step_of(life, SimpleLLMTask("u", "p")), error=BadRequest("no", status_code=400))
    assert life.progress.counts.requests == 2 and life.progress.counts.limiter_wait == 0.0


# -- the steps as OpenTelemetry sees them (the SDK's in-memory exporter) ---------------------------


class Traced:
    """A lifecycle whose batch trace is OpenTelemetry's, into memory; ``send`` is what a driver
    does just before a call (the attempt's span opens)."""

    def __init__(self, tmp_path: Path, **changes: Any) -> None:
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        client = SimpleNamespace(model="base/model", base_url="http://127.0.0.1:1/v1")
        trace = Telemetry(provider).batch("job", 2, client, None)
        self.life = life_of(tmp_path, trace=trace, **changes)

    def send(self, step: Prepared) -> None:
        self.life.trace.sending(step.trace, step.attempt, step.params, None, 0.0)

    def ended(self, name: str) -> list[dict[str, Any]]:
        """The attributes of the spans of ``name`` that have ended, in the order they ended."""
        return [dict(s.attributes or {}) for s in self.spans.get_finished_spans() if s.name == name]

    def parent_of(self, name: str) -> int | None:
        [span] = [s for s in self.spans.get_finished_spans() if s.name == name]
        return span.parent.span_id if span.parent is not None else None


def test_an_answered_attempt_is_traced_under_its_task_which_ends_with_it(tmp_path: Path) -> None:
    traced = Traced(tmp_path, prices={"answering/model": (1_000_000.0, 2_000_000.0)})
    life = traced.life
    step = step_of(life, SimpleLLMTask("t", "p"))
    assert step.trace is not None
    traced.send(step)
    settled = life.settle(step, response=answer())
    assert settled.result is not None
    [call] = traced.ended("chat base/model")
    assert (call["gen_ai.usage.input_tokens"], call["gen_ai.usage.output_tokens"]) == (10, 5)
    assert call["gen_ai.response.model"] == "answering/model"
    assert call["aita.cost"] == pytest.approx(20.0) and "error.type" not in call
    [task] = traced.ended("aita.task")  # ended with the settled result, before finish
    assert task["aita.task.id"] == "t"
    assert (task["aita.outcome"], task["aita.source"]) == ("done", "call")
    assert traced.parent_of("chat base/model") == step.trace.span.get_span_context().span_id
    life.finish(settled.result)
    life.trace.end()
    [batch] = traced.ended("aita.batch")
    assert (batch["aita.batch.completed"], batch["aita.batch.calls"]) == (1, 1)


def test_a_retried_then_failed_task_traces_each_attempt_with_its_error_and_decision(
    tmp_path: Path,
) -> None:
    traced = Traced(tmp_path)
    life = traced.life
    step = step_of(life, SimpleLLMTask("t", "p"))
    traced.send(step)
    assert life.settle(step, error=ProviderUnavailable("busy", status_code=500)).result is None
    [first] = traced.ended("chat base/model")  # ended when settled
    assert (first["error.type"], first["http.response.status_code"]) == ("ProviderUnavailable", 500)
    assert (first["aita.retry"], first["aita.retry.delay"]) == (True, 0.25)
    assert traced.ended("aita.task") == []  # the task goes on
    traced.send(step)
    settled = life.settle(step, error=BadRequest("no", status_code=400))
    assert settled.result is not None
    [_, last] = traced.ended("chat base/model")
    assert (last["error.type"], last["aita.retry"]) == ("BadRequest", False)
    assert last["aita.attempt"] == 1
    [task] = traced.ended("aita.task")  # ended with the result, before finish
    assert (task["aita.outcome"], task["aita.retries"], task["error.type"]) == (
        "failed",
        1,
        "BadRequest",
    )
    life.finish(settled.result)
    life.trace.end()
    [batch] = traced.ended("aita.batch")
    assert (batch["aita.batch.failed"], batch["aita.batch.calls"]) == (1, 2)


def test_a_task_whose_revision_fails_is_traced_as_not_retried(tmp_path: Path) -> None:
    class Unrevisable(SimpleLLMTask):
        def revise_messages(self, messages: list[LLMMessage], error: Exception) -> list[LLMMessage]:
            raise Boom("cannot revise")

    traced = Traced(tmp_path)
    step = step_of(traced.life, Unrevisable("t", "p"))
    traced.send(step)
    settled = traced.life.settle(step, error=ProviderUnavailable("busy", status_code=500))
    assert settled.result is not None and settled.result.error == "cannot revise"
    [call] = traced.ended("chat base/model")
    assert (call["error.type"], call["aita.retry"]) == ("Boom", False)
