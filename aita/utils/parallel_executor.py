"""Run a batch of LLM tasks on a thread pool: throttled, retried, checkpointed, in input order.

One call reads top to bottom in ``_run_task``: wait for the limiter, call, parse, and on failure
classify, retry after a backoff (a 429 pauses every worker) or record the failure. Each finished
task is written to the checkpoint journal at once, so an interrupted batch resumes without
redoing finished work and retries what failed.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from tqdm.auto import tqdm

from aita.config import get_config
from aita.errors import AuthenticationFailed, CheckpointError, RateLimited, ResponseParseError
from aita.services.llm.base import LLMClient, LLMMessage, LLMResponse, Usage
from aita.utils.adaptive_rate import AdaptiveRate
from aita.utils.checkpoint import Checkpoint, CheckpointManager
from aita.utils.llm_tasks import BatchableLLMTask, LLMTask, estimate_prompt_tokens
from aita.utils.pricing import cost_of
from aita.utils.rate_limiter import RateLimiter
from aita.utils.retry import Backoff, ExponentialBackoff, retry_delay
from aita.utils.scheduler import BatchScheduler
from aita.utils.task_graph import TaskGraph
from aita.utils.task_results import BatchResult, ExecutionMetrics, TaskResult

__all__ = [
    "BatchInterrupted",
    "BatchResult",
    "ExecutionMetrics",
    "ParallelLLMExecutor",
    "TaskResult",
    "create_executor",
]

log = logging.getLogger("aita.executor")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

#: How long in-flight calls may take to finish after Ctrl-C before the batch is abandoned.
INTERRUPT_GRACE_SECONDS = 5.0


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch: finished work is in the checkpoint; run again to resume."""

    def __init__(self, message: str, checkpoint_name: str | None, checkpoint_path: Path | None):
        super().__init__(message)
        self.checkpoint_name = checkpoint_name
        self.checkpoint_path = checkpoint_path


class ParallelLLMExecutor:
    """Executes ``LLMTask``s concurrently against one client.

    Unset arguments come from the settings (``get_config().parallel_execution``).
    ``rate_limit`` is requests per second, None for unlimited. ``backoff`` is any callable
    ``(attempt) -> seconds``; ``rate_limiter`` replaces the built-in token bucket.
    ``max_batch_size`` caps how many compatible ``BatchableLLMTask``s share one call (default:
    the task's own ``max_batch_size``; 1 turns batching off). ``tokens_per_minute`` adds a token
    budget: each call reserves an estimate and is corrected by the usage it reports.
    ``adaptive_rate`` follows the provider's rate-limit headers and 429s (see ``adaptive_rate``).
    """

    def __init__(
        self,
        llm_client: LLMClient,
        max_workers: int | None = None,
        rate_limit: float | _Unset | None = UNSET,
        enable_checkpointing: bool | None = None,
        checkpoint_interval: int | None = None,
        checkpoint_dir: str | Path | None = None,
        max_retries: int | None = None,
        show_progress: bool | None = None,
        *,
        backoff: Backoff | None = None,
        rate_limiter: RateLimiter | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        max_batch_size: int | None = None,
        tokens_per_minute: float | None = None,
        adaptive_rate: bool = True,
    ) -> None:
        defaults = get_config().parallel_execution
        self.llm_client = llm_client
        self.max_workers = max_workers if max_workers is not None else defaults.max_workers
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {self.max_workers}")
        self.rate_limit = defaults.rate_limit_rps if isinstance(rate_limit, _Unset) else rate_limit
        self.enable_checkpointing = (
            enable_checkpointing
            if enable_checkpointing is not None
            else defaults.enable_checkpointing
        )
        self.checkpoint_interval = checkpoint_interval or defaults.checkpoint_interval
        self.checkpoint_manager = CheckpointManager(checkpoint_dir or defaults.checkpoint_dir)
        self.max_retries = max_retries if max_retries is not None else defaults.max_retries
        self.show_progress = show_progress if show_progress is not None else defaults.show_progress
        self.backoff: Backoff = backoff or ExponentialBackoff()
        # Set on Ctrl-C: workers stop taking tasks and waits (limiter, backoff) end early.
        self._stop = threading.Event()
        self.rate_limiter = rate_limiter or RateLimiter(
            self.rate_limit,
            tokens_per_minute=tokens_per_minute or defaults.tokens_per_minute,
            sleep=self._wait,
        )
        self.rate_control = (
            AdaptiveRate(self.rate_limiter, self.rate_limiter.rate) if adaptive_rate else None
        )
        self.prices = prices
        self.max_batch_size = max_batch_size
        self._on_task_start: Callable[[LLMTask], object] | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_workers={self.max_workers}, rate_limit={self.rate_limit}, "
            f"max_retries={self.max_retries}, checkpointing={self.enable_checkpointing})"
        )

    # -- the batch -----------------------------------------------------------------------------

    def execute_batch(
        self,
        tasks: Iterable[LLMTask],
        checkpoint_name: str | None = None,
        resume_from_checkpoint: bool = True,
        on_task_complete: Callable[[TaskResult], object] | None = None,
        *,
        on_task_start: Callable[[LLMTask], object] | None = None,
        fail_fast: bool = False,
        timeout: float | None = None,
    ) -> BatchResult:
        """Run every task; ``task_results`` come back in input order.

        With checkpointing on, a batch under the same ``checkpoint_name`` (default: derived from
        the tasks) resumes: succeeded tasks are re-parsed from the checkpoint, failed ones run
        again. Ctrl-C raises ``BatchInterrupted`` after saving what finished.

        ``fail_fast`` cancels every task not yet started once one fails; ``timeout`` (seconds)
        does the same when the batch runs longer. Running calls finish either way.
        """
        task_list = list(tasks)
        graph = TaskGraph.build(task_list)
        started = time.perf_counter()
        fingerprint = _fingerprint(task_list)
        name = checkpoint_name or f"batch_{fingerprint[:12]}"
        checkpoint = self._open_checkpoint(
            name, fingerprint, len(task_list), resume_from_checkpoint
        )
        resumed = self._resume(task_list, checkpoint)
        results: list[TaskResult | None] = [resumed.get(task.task_id) for task in task_list]
        journal = (
            self.checkpoint_manager.start_journal(checkpoint, self.checkpoint_interval)
            if checkpoint is not None
            else None
        )
        progress = tqdm(
            total=len(task_list),
            initial=len(resumed),
            desc=f"🚀 Executing {len(task_list)} tasks",
            unit="task",
            disable=not self.show_progress,
            dynamic_ncols=True,
            mininterval=0.2,
            bar_format="{desc} {bar} {percentage:3.0f}% | {n_fmt}/{total_fmt} | "
            "{elapsed} < {remaining}{postfix}",
        )
        # A fresh event per batch: workers abandoned by an interrupted batch stay stopped.
        self._stop = threading.Event()
        batch = BatchScheduler(
            task_list, graph, results, journal, progress, on_task_complete, self._stop, fail_fast
        )
        self._on_task_start = on_task_start
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, batch.cancel, args=(f"cancelled: over {timeout:g}s",))
            timer.daemon = True
            timer.start()
        try:
            self._run_workers(batch, min(self.max_workers, batch.pending))
        except KeyboardInterrupt:
            done = sum(r is not None for r in batch.results)
            path = checkpoint.path if checkpoint is not None else None
            where = f"; finished work saved to {path}" if path else ""
            raise BatchInterrupted(
                f"interrupted after {done}/{len(task_list)} tasks{where}; run the batch again "
                f"with checkpoint_name={name!r} to resume",
                name,
                path,
            ) from None
        finally:
            if timer is not None:
                timer.cancel()
            batch.show_counts()
            progress.close()
            if journal is not None:
                journal.close()
        final = [r for r in batch.results if r is not None]
        metrics = self._metrics(batch, final, time.perf_counter() - started)
        return BatchResult(final, metrics, checkpoint.path if checkpoint is not None else None)

    def _wait(self, seconds: float) -> None:
        """The limiter's sleep: ends early when the current batch is stopped."""
        self._stop.wait(seconds)

    def _run_workers(self, batch: BatchScheduler, count: int) -> None:
        threads = [
            threading.Thread(
                target=self._worker, args=(batch,), name=f"aita-worker-{i}", daemon=True
            )
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            batch.request_stop()
            deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
            try:
                for thread in threads:
                    thread.join(max(0.0, deadline - time.monotonic()))
            except KeyboardInterrupt:
                pass  # a second Ctrl-C: stop waiting for in-flight calls
            raise

    def _worker(self, batch: BatchScheduler) -> None:
        while (index := batch.next_index()) is not None:
            task = batch.tasks[index]
            partners = batch.take_batch_partners(index, self._batch_limit(task) - 1)
            if partners:
                if not self._run_combined(batch, [index, *partners]):
                    return
                continue
            if task.dependencies:
                task.dependency_results = batch.dependency_results(index)
            if self._on_task_start is not None:
                self._on_task_start(task)
            result = self._run_task(batch, task)
            if result is None:  # stopped mid-task: not finished, not recorded
                return
            batch.finish(index, result)

    def _batch_limit(self, task: LLMTask) -> int:
        if not isinstance(task, BatchableLLMTask):
            return 1
        return self.max_batch_size if self.max_batch_size is not None else task.max_batch_size

    def _run_combined(self, batch: BatchScheduler, members: list[int]) -> bool:
        """One call for several batchable tasks, split back; False if stopped by Ctrl-C.

        A member missing from the split (or every member, if the combined call failed) goes
        back to the queue to run on its own.
        """
        tasks = [batch.tasks[i] for i in members]
        first = tasks[0]
        assert isinstance(first, BatchableLLMTask)
        if self._on_task_start is not None:
            for task in tasks:
                self._on_task_start(task)
        combined = first.combine_with(tasks[1:])  # type: ignore[arg-type]
        result = self._run_task(batch, combined)
        if result is None:
            return False
        answers: dict[str, Any] = {}
        if result.success and not result.used_fallback:
            try:
                answers = combined.split_batch_result(result.result)
            except Exception as error:
                log.warning("could not split the answer of %s: %s", combined.task_id, error)
        share = 1 / len(members)
        missing = []
        for index, task in zip(members, tasks, strict=True):
            if task.task_id not in answers:
                missing.append(index)
                continue
            batch.finish(
                index,
                TaskResult(
                    task_id=task.task_id,
                    success=True,
                    result=answers[task.task_id],
                    retry_count=result.retry_count,
                    execution_time=result.execution_time,
                    tokens=round(result.tokens * share),
                    prompt_tokens=round(result.prompt_tokens * share),
                    completion_tokens=round(result.completion_tokens * share),
                    cost=result.cost * share,
                    model=result.model,
                    batched=True,
                ),
            )
        if missing:
            batch.run_alone(missing)
        return True

    # -- one task: the retry loop ----------------------------------------------------------

    def _run_task(self, batch: BatchScheduler, task: LLMTask) -> TaskResult | None:
        started = time.perf_counter()
        usage = _UsageTotal()
        try:
            messages = task.build_messages()
            params = task.request_params()
        except Exception as error:  # a bug in the task, not the provider: no retry
            return self._failure(task, error, 0, started, usage)
        attempt = 0
        estimate = (
            _estimate_tokens(task, messages, params) if self.rate_limiter.tokens_per_minute else 0
        )
        while True:
            waited = self.rate_limiter.acquire(estimate)
            if batch.stop.is_set():
                return None
            sent_at = time.monotonic()
            try:
                response = self._call(messages, params, usage)
                if estimate and response.usage.total_tokens:
                    self.rate_limiter.correct(response.usage.total_tokens - estimate)
                if response.headers and self.rate_control is not None:
                    self.rate_control.on_response(response.headers)
                try:
                    value = task.parse_response(response.content)
                except Exception as error:
                    raise ResponseParseError(
                        f"could not parse the response: {error}", response.content
                    ) from error
            except Exception as error:
                limited = isinstance(error, RateLimited)
                delay = retry_delay(error, attempt, self.backoff)
                if limited and self.rate_control is not None:
                    self.rate_control.on_rate_limited(error, delay, sent_at)  # type: ignore[arg-type]
                elif limited:
                    self.rate_limiter.pause(delay)  # every worker waits, not just this one
                retry = attempt < self.max_retries and task.should_retry(error, attempt)
                batch.count_attempt(waited, limited, retry)
                if not retry:
                    if isinstance(error, AuthenticationFailed):
                        # Every other call would be refused the same way: no storm of 401s.
                        batch.cancel(f"cancelled: the provider refused the API key ({error})")
                    return self._failure(task, error, attempt, started, usage)
                attempt += 1
                if batch.stop.wait(0.0 if limited else delay):
                    return None
                messages = task.revise_messages(messages, error)
                continue
            batch.count_attempt(waited, False, False)
            return TaskResult(
                task_id=task.task_id,
                success=True,
                result=value,
                raw_response=response.content,
                retry_count=attempt,
                execution_time=time.perf_counter() - started,
                model=response.model,
                **usage.fields(),
            )

    def _call(
        self, messages: list[LLMMessage], params: dict[str, Any], usage: _UsageTotal
    ) -> LLMResponse:
        started = time.perf_counter()
        try:
            response = self.llm_client.complete(messages, **params)
        finally:
            usage.call_time += time.perf_counter() - started
        usage.add(response.model, response.usage, self.prices)
        return response

    def _failure(
        self, task: LLMTask, error: Exception, attempt: int, started: float, usage: _UsageTotal
    ) -> TaskResult:
        result = TaskResult(
            task_id=task.task_id,
            success=False,
            error=str(error) or type(error).__name__,
            error_type=type(error).__name__,
            retry_count=attempt,
            execution_time=time.perf_counter() - started,
            model=usage.model,
            exception=error,
            **usage.fields(),
        )
        if task.has_fallback:
            try:
                result.result = task.fallback(error)
            except Exception as fallback_error:
                log.warning("fallback of task %s failed: %s", task.task_id, fallback_error)
            else:
                result.success = True
                result.used_fallback = True
        return result

    # -- checkpoints ---------------------------------------------------------------------------

    def _open_checkpoint(
        self, name: str, fingerprint: str, total: int, resume: bool
    ) -> Checkpoint | None:
        if not self.enable_checkpointing:
            return None
        manager = self.checkpoint_manager
        latest = manager.find_latest_checkpoint(name) if resume else None
        if latest is not None:
            try:
                previous = manager.load(latest)
            except CheckpointError as error:
                log.warning("%s; starting fresh", error)
            else:
                if previous.fingerprint == fingerprint:
                    return previous
                log.warning(
                    "%s holds a different batch under the name %r; starting fresh", latest, name
                )
        return Checkpoint(name=name, fingerprint=fingerprint, total_tasks=total)

    def _resume(self, tasks: list[LLMTask], checkpoint: Checkpoint | None) -> dict[str, TaskResult]:
        """Results of tasks that succeeded before, re-parsed by their own ``parse_response``."""
        if checkpoint is None or not checkpoint.records:
            return {}
        resumed: dict[str, TaskResult] = {}
        for task in tasks:
            record = checkpoint.records.get(task.task_id)
            if record is None or not record.succeeded:
                continue
            if record.raw_response is None:
                if record.value is None:
                    continue
                value = record.value  # answered in a combined call: the stored result
            else:
                try:
                    value = task.parse_response(record.raw_response)
                except Exception as error:
                    log.warning(
                        "task %s: checkpointed answer no longer parses (%s); rerunning",
                        task.task_id,
                        error,
                    )
                    continue
            usage = Usage.from_dict(record.usage)
            resumed[task.task_id] = TaskResult(
                task_id=task.task_id,
                success=True,
                result=value,
                batched=record.raw_response is None,
                raw_response=record.raw_response,
                retry_count=record.retry_count,
                execution_time=record.execution_time,
                tokens=usage.total_tokens,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost=usage.cost or 0.0,
                model=record.model,
                from_checkpoint=True,
            )
        return resumed

    # -- metrics -------------------------------------------------------------------------------

    def _metrics(
        self, batch: BatchScheduler, results: list[TaskResult], wall: float
    ) -> ExecutionMetrics:
        fresh = [r for r in results if not r.from_checkpoint]
        times = sorted(r.execution_time for r in fresh)
        cost_by_model: dict[str, float] = {}
        for r in fresh:
            if r.model:
                cost_by_model[r.model] = cost_by_model.get(r.model, 0.0) + r.cost
        return ExecutionMetrics(
            total_tasks=len(batch.tasks),
            completed_tasks=sum(r.success for r in results),
            failed_tasks=sum(not r.success for r in results),
            retried_tasks=sum(r.retry_count > 0 for r in fresh),
            total_retries=batch.retries,
            resumed_tasks=len(results) - len(fresh),
            fallback_tasks=sum(r.used_fallback for r in results),
            requests=batch.requests,
            rate_limited_responses=batch.rate_limited,
            rate_limit_wait_time=batch.limiter_wait,
            wall_time=wall,
            throughput=len(fresh) / wall if wall > 0 else 0.0,
            avg_task_time=statistics.fmean(times) if times else 0.0,
            min_task_time=times[0] if times else 0.0,
            max_task_time=times[-1] if times else 0.0,
            p50_latency=_percentile(times, 0.50),
            p95_latency=_percentile(times, 0.95),
            prompt_tokens=sum(r.prompt_tokens for r in fresh),
            completion_tokens=sum(r.completion_tokens for r in fresh),
            total_tokens=sum(r.tokens for r in fresh),
            total_cost=sum(r.cost for r in fresh),
            cost_by_model=cost_by_model,
        )


class _UsageTotal:
    """Tokens, cost and time in calls over every attempt of one task (a response that failed
    to parse still cost)."""

    __slots__ = ("call_time", "completion", "cost", "model", "prompt")

    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0
        self.cost = 0.0
        self.call_time = 0.0
        self.model: str | None = None

    def add(
        self, model: str, usage: Usage, prices: Mapping[str, tuple[float, float]] | None
    ) -> None:
        self.model = model
        self.prompt += usage.prompt_tokens
        self.completion += usage.completion_tokens
        self.cost += cost_of(model, usage, prices)

    def fields(self) -> dict[str, Any]:
        return {
            "tokens": self.prompt + self.completion,
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "cost": self.cost,
            "call_time": self.call_time,
        }


def _estimate_tokens(task: LLMTask, messages: list[LLMMessage], params: dict[str, Any]) -> int:
    """The prompt plus the answer's cap (or its typical size)."""
    answer = params.get("max_tokens") or params.get("max_completion_tokens")
    return estimate_prompt_tokens(messages) + int(answer or task.expected_output_tokens)


def _fingerprint(tasks: list[LLMTask]) -> str:
    digest = hashlib.sha256()
    for task in tasks:
        digest.update(task.fingerprint().encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def create_executor(llm_client: LLMClient, **kwargs: Any) -> ParallelLLMExecutor:
    """An executor with settings from the config, overridden by ``kwargs``."""
    return ParallelLLMExecutor(llm_client, **kwargs)
