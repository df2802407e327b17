"""One task's lifecycle: a raise at any step is that task's failed result and the run goes on;
a journal that cannot be written stops the run within seconds, naming the file; no run waits on
a worker that died. Every run here is bounded in time by ``within``."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aita.engine import (
    Checkpoint,
    LLMMessage,
    LLMResponse,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    ResponseCache,
    RunFailed,
    SimpleLLMTask,
    SpendLedger,
    TaskResult,
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
    executor = executor_for(client_for(sim), cache=True)
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
