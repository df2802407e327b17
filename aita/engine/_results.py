"""What a batch returns, and the one place a ``TaskResult`` is made.

``TaskRun`` follows one task through its attempts (tokens, cost and call time add up over every
attempt, live or in Batch API rounds: a response that failed to parse was still paid for) and
makes its result; ``not_run`` makes the result of a task that never ran (skipped, cancelled);
``share_of`` the result of one member of a combined call; ``reused_from_journal`` the result
of a task answered by an earlier run, taken from its journal.
``batch_metrics`` sums a finished batch.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aita.engine._client import LLMResponse, Usage
from aita.engine._pricing import cost_of
from aita.errors import Cancelled, DependencyFailed

#: How a task ended: answered (``done``), answered but to be reviewed (``flagged``: its fallback
#: stood in, or the answer was cut off at the token limit), or not (``failed``; ``skipped`` for a
#: dependency that did not succeed; ``cancelled`` when the run stopped before it started).
Outcome = Literal["done", "flagged", "failed", "skipped", "cancelled"]
#: Where its answer came from: a ``call`` of this run, or one of an earlier run, *reused* from the
#: ``journal`` (its checkpoint) or the response ``cache``.
Source = Literal["call", "journal", "cache"]


@dataclass(init=False)
class TaskResult:
    """One task's outcome. ``result`` is the parsed answer (or the fallback's, when it stood
    in); tokens and cost cover every attempt; times are seconds.

    ``outcome`` and ``source`` say how it ended and where its answer came from; ``success``,
    ``used_fallback``, ``from_checkpoint``, ``cached`` and ``batched`` are read-only views of
    them, and are still accepted as keywords."""

    task_id: str
    outcome: Outcome
    source: Source
    result: Any
    raw_response: str | None
    error: str | None
    error_type: str | None
    retry_count: int
    #: seconds from the task's first turn at the rate limiter to its end (backoffs included)
    execution_time: float
    #: seconds spent inside calls to the provider, over every attempt
    call_time: float
    tokens: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    model: str | None
    #: answered inside a call *combined* with other ``BatchableLLMTask``s (no raw response)
    combined: bool
    #: answered by the provider simulator (``--dry-run``), never by a real model
    simulated: bool
    #: why the model stopped (``stop``, ``length`` for an answer cut off at ``max_tokens``)
    finish_reason: str | None
    #: what was asked (``aita.engine.request_key``): model, messages, parameters, task version
    request_key: str | None = field(repr=False)
    exception: BaseException | None = field(repr=False, compare=False)

    def __init__(
        self,
        task_id: str,
        success: bool | None = None,
        result: Any = None,
        raw_response: str | None = None,
        error: str | None = None,
        error_type: str | None = None,
        retry_count: int = 0,
        execution_time: float = 0.0,
        call_time: float = 0.0,
        tokens: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost: float = 0.0,
        model: str | None = None,
        used_fallback: bool = False,
        from_checkpoint: bool = False,
        batched: bool = False,
        simulated: bool = False,
        finish_reason: str | None = None,
        request_key: str | None = None,
        cached: bool = False,
        exception: BaseException | None = None,
        *,
        outcome: Outcome | None = None,
        source: Source | None = None,
        combined: bool | None = None,
    ) -> None:
        if outcome is None:
            if success is None:
                raise TypeError("TaskResult needs an outcome (or success)")
            outcome = _outcome(success, used_fallback, finish_reason, error_type)
        self.task_id = task_id
        self.outcome = outcome
        self.source = source or ("journal" if from_checkpoint else "cache" if cached else "call")
        self.result = result
        self.raw_response = raw_response
        self.error = error
        self.error_type = error_type
        self.retry_count = retry_count
        self.execution_time = execution_time
        self.call_time = call_time
        self.tokens = tokens
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cost = cost
        self.model = model
        self.combined = batched if combined is None else combined
        self.simulated = simulated
        self.finish_reason = finish_reason
        self.request_key = request_key
        self.exception = exception

    @property
    def success(self) -> bool:
        """It has a usable answer: done or flagged."""
        return self.outcome in ("done", "flagged")

    @property
    def used_fallback(self) -> bool:
        """Its fallback stood in after every attempt failed (flagged, with the error kept)."""
        return self.outcome == "flagged" and self.error is not None

    @property
    def from_checkpoint(self) -> bool:
        """Reused from the journal of an earlier run."""
        return self.source == "journal"

    @property
    def cached(self) -> bool:
        """Reused from the response cache: no call was made, nothing was paid."""
        return self.source == "cache"

    @property
    def batched(self) -> bool:
        """The old name of ``combined``."""
        return self.combined


def _outcome(
    success: bool, used_fallback: bool, finish_reason: str | None, error_type: str | None
) -> Outcome:
    if success:
        return "flagged" if used_fallback or finish_reason == "length" else "done"
    if error_type == "DependencyFailed":
        return "skipped"
    if error_type == "Cancelled":
        return "cancelled"
    return "failed"


@dataclass
class ExecutionMetrics:
    """Counts are tasks unless named otherwise; times in seconds; cost in USD.

    Tokens and cost cover the calls made in this run (tasks reused from the journal cost
    nothing again).
    """

    total_tasks: int = 0
    completed_tasks: int = 0
    failed_tasks: int = 0
    retried_tasks: int = 0
    total_retries: int = 0
    #: answered from the checkpoint: a record with the same task id and request key succeeded
    resumed_tasks: int = 0
    #: run because the checkpoint held them under another request (model, prompt, parameters)
    changed_tasks: int = 0
    #: run because the checkpoint had no record of them
    new_tasks: int = 0
    #: run again because their earlier attempt at the same request had failed
    rerun_tasks: int = 0
    fallback_tasks: int = 0
    requests: int = 0
    rate_limited_responses: int = 0
    rate_limit_wait_time: float = 0.0
    wall_time: float = 0.0
    throughput: float = 0.0
    avg_task_time: float = 0.0
    min_task_time: float = 0.0
    max_task_time: float = 0.0
    p50_latency: float = 0.0
    p95_latency: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    total_cost: float = 0.0
    cost_by_model: dict[str, float] = field(default_factory=dict)
    #: answered calls at a price nobody knows (``total_cost`` leaves them out: unknown, not free)
    unpriced_requests: int = 0
    #: calls answered by the provider simulator: never spend
    simulated_requests: int = 0
    #: answers cut off at the token limit (``finish_reason`` ``length``): they may be incomplete
    truncated_responses: int = 0
    #: tasks answered from the response cache: no call, no cost
    cached_tasks: int = 0


@dataclass
class BatchResult:
    """Every task's result in input order, the batch's metrics, and its checkpoint file."""

    task_results: list[TaskResult]
    metrics: ExecutionMetrics
    checkpoint_path: Path | None = None

    @property
    def successful_results(self) -> list[TaskResult]:
        """The results that succeeded (fallbacks included), in input order."""
        return [r for r in self.task_results if r.success]

    @property
    def failed_results(self) -> list[TaskResult]:
        """The results that failed (skipped and cancelled included), in input order."""
        return [r for r in self.task_results if not r.success]

    @property
    def success_rate(self) -> float:
        """Percent of tasks that succeeded (100.0 for an empty batch)."""
        if not self.task_results:
            return 100.0
        return 100.0 * len(self.successful_results) / len(self.task_results)

    def get_result_by_id(self, task_id: str) -> TaskResult | None:
        """The result of the task with this id, or None."""
        return next((r for r in self.task_results if r.task_id == task_id), None)


class TaskRun:
    """One task from its first turn at the rate limiter to its result."""

    __slots__ = (
        "_discount",
        "_prices",
        "_started",
        "call_time",
        "completion",
        "cost",
        "finish_reason",
        "key",
        "last_cost",
        "model",
        "prompt",
        "raw",
        "simulated",
        "task_id",
    )

    def __init__(
        self,
        task_id: str,
        prices: Mapping[str, tuple[float, float]] | None,
        discount: float = 1.0,
    ) -> None:
        self.task_id = task_id
        self._prices = prices
        self._discount = discount
        self._started = time.perf_counter()
        self.key: str | None = None
        self.prompt = 0
        self.completion = 0
        self.cost = 0.0
        #: the price of the latest call; None when nobody knows it
        self.last_cost: float | None = None
        self.call_time = 0.0
        self.model: str | None = None
        self.raw: str | None = None
        self.simulated = False
        self.finish_reason: str | None = None

    def record(self, response: LLMResponse) -> None:
        """An answered attempt: its tokens and its cost (at ``discount`` of the price table's
        when the provider gave no cost) are added up."""
        self.model = response.model
        self.raw = response.content
        self.simulated = response.simulated
        self.finish_reason = response.finish_reason
        usage = response.usage
        self.prompt += usage.prompt_tokens
        self.completion += usage.completion_tokens
        if usage.cost is not None or self._discount == 1.0:
            self.last_cost = cost_of(response.model, usage, self._prices)
        else:
            listed = cost_of(
                response.model, Usage(usage.prompt_tokens, usage.completion_tokens), self._prices
            )
            self.last_cost = None if listed is None else listed * self._discount
        self.cost += self.last_cost or 0.0

    def succeeded(self, value: Any, attempt: int) -> TaskResult:
        """Answered by a call: done, or flagged when the answer was cut off."""
        flagged = self.finish_reason == "length"
        return self._result("flagged" if flagged else "done", attempt, result=value)

    def failed(self, error: BaseException, attempt: int, message: str | None = None) -> TaskResult:
        return self._result(_not_done(error), attempt, **_error_fields(error, message))

    def from_cache(self, value: Any, response: LLMResponse) -> TaskResult:
        """Answered by the response cache: the stored answer, no call, no cost."""
        self.model = response.model
        self.raw = response.content
        self.finish_reason = response.finish_reason
        flagged = self.finish_reason == "length"
        return self._result("flagged" if flagged else "done", 0, result=value, source="cache")

    def fell_back(
        self, error: BaseException, attempt: int, value: Any, message: str | None = None
    ) -> TaskResult:
        """Every attempt failed and the task's ``fallback`` gave ``value``: a success that
        says so (``used_fallback``), still carrying the error."""
        fields = _error_fields(error, message)
        return self._result("flagged", attempt, result=value, **fields)

    def _result(self, outcome: Outcome, attempt: int, **fields: Any) -> TaskResult:
        return TaskResult(
            task_id=self.task_id,
            outcome=outcome,
            retry_count=attempt,
            execution_time=time.perf_counter() - self._started,
            call_time=self.call_time,
            tokens=self.prompt + self.completion,
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            cost=self.cost,
            model=self.model,
            raw_response=self.raw,  # the last answer, also when it failed to parse
            simulated=self.simulated,
            finish_reason=self.finish_reason,
            request_key=self.key,
            **fields,
        )


def not_run(task_id: str, error: BaseException, message: str | None = None) -> TaskResult:
    """A task that never started: skipped for a failed dependency, or cancelled."""
    return TaskResult(task_id=task_id, outcome=_not_done(error), **_error_fields(error, message))


def _not_done(error: BaseException) -> Outcome:
    """A task without an answer: skipped for a dependency, cancelled, or failed."""
    if isinstance(error, DependencyFailed):
        return "skipped"
    return "cancelled" if isinstance(error, Cancelled) else "failed"


def _error_fields(error: BaseException, message: str | None = None) -> dict[str, Any]:
    return {
        "error": message or str(error) or type(error).__name__,
        "error_type": type(error).__name__,
        "exception": error,
    }


def share_of(
    combined: TaskResult, task_id: str, value: Any, members: int, request_key: str | None
) -> TaskResult:
    """One member's result of a combined call: its answer and an equal share of the cost.
    ``request_key`` is the member's own (what it would have asked alone)."""
    share = 1 / members
    return TaskResult(
        task_id=task_id,
        outcome=combined.outcome,
        result=value,
        retry_count=combined.retry_count,
        execution_time=combined.execution_time,
        tokens=round(combined.tokens * share),
        prompt_tokens=round(combined.prompt_tokens * share),
        completion_tokens=round(combined.completion_tokens * share),
        cost=combined.cost * share,
        model=combined.model,
        combined=True,
        simulated=combined.simulated,
        finish_reason=combined.finish_reason,
        request_key=request_key,
    )


def reused_from_journal(
    task_id: str,
    value: Any,
    *,
    raw_response: str | None,
    usage: Usage,
    model: str | None,
    retry_count: int,
    execution_time: float,
    request_key: str | None,
    simulated: bool,
    finish_reason: str | None,
) -> TaskResult:
    """A task answered by an earlier run (its answer re-parsed, or a combined call's value)."""
    return TaskResult(
        task_id=task_id,
        outcome="flagged" if finish_reason == "length" else "done",
        source="journal",
        result=value,
        combined=raw_response is None,
        raw_response=raw_response,
        retry_count=retry_count,
        execution_time=execution_time,
        tokens=usage.total_tokens,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost=usage.cost or 0.0,
        model=model,
        request_key=request_key,
        simulated=simulated,
        finish_reason=finish_reason,
    )


@dataclass
class AttemptCounts:
    """What the calls of a batch did, and how its tasks stood against the journal, counted as
    they happen."""

    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    limiter_wait: float = 0.0
    #: tasks answered from the journal; with a record under another request key; with none;
    #: with a record of the same request that had failed
    reused: int = 0
    changed: int = 0
    new: int = 0
    rerun: int = 0
    #: answered calls nobody knows the price of; answered by the simulator (never spend)
    unpriced: int = 0
    simulated: int = 0
    #: answers cut off at the token limit
    truncated: int = 0
    #: tasks answered from the response cache (no call)
    cached: int = 0


class MetricsTally:
    """A batch's metrics summed as its results arrive, in constant memory: latencies are kept
    whole up to ``SAMPLE`` and as a uniform random sample beyond (percentiles of a stream of
    millions stay honest without holding every time)."""

    SAMPLE = 100_000

    def __init__(self) -> None:
        self.results = 0
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self.from_journal = 0
        self.fallback = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.cost_by_model: dict[str, float] = {}
        self._fresh = 0
        self._time_sum = 0.0
        self._time_min = float("inf")
        self._time_max = 0.0
        self._times: list[float] = []
        self._rng = random.Random(0)

    def add(self, result: TaskResult) -> None:
        self.results += 1
        self.completed += result.success
        self.failed += not result.success
        self.fallback += result.used_fallback
        if result.source == "journal":
            self.from_journal += 1
            return  # answered before: it cost nothing and took no time now
        self._fresh += 1
        self.retried += result.retry_count > 0
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cost += result.cost
        if result.model:
            self.cost_by_model[result.model] = (
                self.cost_by_model.get(result.model, 0.0) + result.cost
            )
        t = result.execution_time
        self._time_sum += t
        self._time_min = min(self._time_min, t)
        self._time_max = max(self._time_max, t)
        if len(self._times) < self.SAMPLE:
            self._times.append(t)
        elif (slot := self._rng.randrange(self._fresh)) < self.SAMPLE:
            self._times[slot] = t

    def metrics(self, total: int, counts: AttemptCounts, wall: float) -> ExecutionMetrics:
        times = sorted(self._times)
        return ExecutionMetrics(
            total_tasks=total,
            completed_tasks=self.completed,
            failed_tasks=self.failed,
            retried_tasks=self.retried,
            total_retries=counts.retries,
            resumed_tasks=self.from_journal,
            changed_tasks=counts.changed,
            new_tasks=counts.new,
            rerun_tasks=counts.rerun,
            fallback_tasks=self.fallback,
            requests=counts.requests,
            rate_limited_responses=counts.rate_limited,
            rate_limit_wait_time=counts.limiter_wait,
            wall_time=wall,
            throughput=self._fresh / wall if wall > 0 else 0.0,
            avg_task_time=self._time_sum / self._fresh if self._fresh else 0.0,
            min_task_time=self._time_min if self._fresh else 0.0,
            max_task_time=self._time_max,
            p50_latency=_percentile(times, 0.50),
            p95_latency=_percentile(times, 0.95),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
            total_cost=self.cost,
            cost_by_model=self.cost_by_model,
            unpriced_requests=counts.unpriced,
            simulated_requests=counts.simulated,
            truncated_responses=counts.truncated,
            cached_tasks=counts.cached,
        )


def batch_metrics(
    total: int, results: list[TaskResult], counts: AttemptCounts, wall: float
) -> ExecutionMetrics:
    tally = MetricsTally()
    for result in results:
        tally.add(result)
    return tally.metrics(total, counts, wall)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]
