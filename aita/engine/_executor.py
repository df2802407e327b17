"""The executor: a batch of tasks on a thread pool, one result per task in input order.

One task's life, top to bottom: ``execute_batch`` opens the checkpoint journal and starts the
workers; a worker takes a job from the scheduler (``_scheduler``); ``_run_task`` waits for the
limiter (``_limiter``), calls the client (``_client``), parses the answer, and on an error asks
the retry policy (``_retry``) whether and when to try again; the finished task goes back to the
scheduler, which writes it to the journal (``_journal``) and releases the tasks that waited for
it. Ctrl-C stops dispatch, lets calls in flight finish briefly, and raises ``BatchInterrupted``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import ValidationError

from aita.config import get_config
from aita.engine._adaptive import AdaptiveRate
from aita.engine._cache import ResponseCache
from aita.engine._client import LLMClient, LLMMessage, LLMResponse
from aita.engine._concurrency import AUTO_MAX_WORKERS, NO_CONCURRENCY_LIMIT, ConcurrencyLimit
from aita.engine._graph import TaskGraph
from aita.engine._journal import Checkpoint, CheckpointManager, JournalIndex
from aita.engine._keys import client_model, request_key
from aita.engine._ledger import SpendLedger
from aita.engine._limiter import RateLimiter
from aita.engine._outage import OutageGate
from aita.engine._progress import BatchProgress
from aita.engine._results import (
    BatchResult,
    ExecutionMetrics,
    MetricsTally,
    TaskResult,
    TaskRun,
    batch_metrics,
    share_of,
)
from aita.engine._retry import Backoff, ExponentialBackoff, RetryPolicy
from aita.engine._scheduler import BatchScheduler, Job, Outlet, Scheduler
from aita.engine._shared_limiter import RedisRateLimiter, default_limit_name
from aita.engine._stream import StreamScheduler
from aita.engine._tasks import BatchableLLMTask, LLMTask, estimate_prompt_tokens
from aita.errors import (
    ProviderError,
    ProviderOutage,
    RateLimited,
    ResponseParseError,
    TruncatedResponse,
    validation_problem,
)

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


@dataclass(frozen=True)
class ExecutorSettings:
    """The executor's settings, resolved once: an argument left unset comes from the config."""

    max_workers: int
    rate_limit: float | None
    tokens_per_minute: float | None
    enable_checkpointing: bool
    checkpoint_interval: int
    checkpoint_dir: Path
    max_retries: int
    show_progress: bool
    spend_ledger: Path | None
    outage_budget: float
    #: where the rate limit is shared (``AITA_REDIS_URL``); None: this process alone
    redis_url: str | None
    limit_name: str | None
    #: the response cache's file, when the cache is on
    cache_path: Path | None

    @classmethod
    def resolve(
        cls,
        *,
        max_workers: int | None = None,
        rate_limit: float | _Unset | None = UNSET,
        tokens_per_minute: float | None = None,
        enable_checkpointing: bool | None = None,
        checkpoint_interval: int | None = None,
        checkpoint_dir: str | Path | None = None,
        max_retries: int | None = None,
        show_progress: bool | None = None,
        spend_ledger: str | Path | _Unset | None = UNSET,
        outage_budget: float | None = None,
        redis_url: str | _Unset | None = UNSET,
        limit_name: str | None = None,
        cache: bool | str | Path | None = None,
    ) -> ExecutorSettings:
        config = get_config().parallel_execution
        settings = cls(
            max_workers=config.max_workers if max_workers is None else max_workers,
            rate_limit=config.rate_limit_rps if isinstance(rate_limit, _Unset) else rate_limit,
            tokens_per_minute=tokens_per_minute or config.tokens_per_minute,
            enable_checkpointing=(
                config.enable_checkpointing
                if enable_checkpointing is None
                else enable_checkpointing
            ),
            checkpoint_interval=checkpoint_interval or config.checkpoint_interval,
            checkpoint_dir=Path(checkpoint_dir or config.checkpoint_dir),
            max_retries=config.max_retries if max_retries is None else max_retries,
            show_progress=config.show_progress if show_progress is None else show_progress,
            spend_ledger=(
                config.spend_ledger
                if isinstance(spend_ledger, _Unset)
                else Path(spend_ledger)
                if spend_ledger is not None
                else None
            ),
            outage_budget=config.outage_budget if outage_budget is None else outage_budget,
            redis_url=(
                (config.redis_url.get_secret_value() if config.redis_url else None)
                if isinstance(redis_url, _Unset)
                else redis_url
            ),
            limit_name=limit_name or config.rate_limit_name,
            cache_path=_cache_path(cache, config.cache, config.cache_path),
        )
        if settings.max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {settings.max_workers}")
        return settings


class ParallelLLMExecutor:
    """Executes ``LLMTask``s concurrently against one client.

    Unset arguments come from the settings (``get_config().parallel_execution``).
    ``max_workers="auto"`` keeps as many calls in flight as a self-hosted server answers
    without queueing, learned from latency as it runs (``ConcurrencyLimit``).
    ``rate_limit`` is requests per second, None for unlimited. ``retry_policy`` decides retries
    (default: ``RetryPolicy(max_retries, backoff)``; ``backoff`` is any callable
    ``(attempt) -> seconds``); ``rate_limiter`` replaces the built-in one. ``max_batch_size``
    caps how many compatible ``BatchableLLMTask``s share one call (default: the task's own
    ``max_batch_size``; 1 turns batching off). ``tokens_per_minute`` adds a token budget: each
    call reserves an estimate and is corrected by the usage it reports. ``adaptive_rate``
    follows the provider's rate-limit headers and 429s (see ``AdaptiveRate``).
    ``spend_ledger`` is the file every paid call is written to (``AITA_SPEND_LEDGER``; None
    keeps none). ``outage_budget`` is how many seconds the provider may stay unreachable
    before the batch stops (``AITA_OUTAGE_BUDGET``); during an outage every worker waits and
    tasks keep their retries. ``redis_url`` (``AITA_REDIS_URL``) shares the rate limit, token
    budget and 429 pauses with every process naming the same ``limit_name`` (default: the
    provider's URL and the model). ``cache`` (``AITA_CACHE``; True, a file, or a
    ``ResponseCache``) answers a request asked before, by any batch, without a call.
    """

    def __init__(
        self,
        llm_client: LLMClient,
        max_workers: int | Literal["auto"] | None = None,
        rate_limit: float | _Unset | None = UNSET,
        enable_checkpointing: bool | None = None,
        checkpoint_interval: int | None = None,
        checkpoint_dir: str | Path | None = None,
        max_retries: int | None = None,
        show_progress: bool | None = None,
        *,
        backoff: Backoff | None = None,
        retry_policy: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        max_batch_size: int | None = None,
        tokens_per_minute: float | None = None,
        adaptive_rate: bool = True,
        spend_ledger: str | Path | _Unset | None = UNSET,
        outage_budget: float | None = None,
        redis_url: str | _Unset | None = UNSET,
        limit_name: str | None = None,
        cache: bool | str | Path | ResponseCache | None = None,
    ) -> None:
        # "auto": as many worker threads as may ever help, the calls in flight limited by latency
        self.concurrency = ConcurrencyLimit() if max_workers == "auto" else NO_CONCURRENCY_LIMIT
        settings = ExecutorSettings.resolve(
            max_workers=AUTO_MAX_WORKERS if max_workers == "auto" else max_workers,
            rate_limit=rate_limit,
            tokens_per_minute=tokens_per_minute,
            enable_checkpointing=enable_checkpointing,
            checkpoint_interval=checkpoint_interval,
            checkpoint_dir=checkpoint_dir,
            max_retries=max_retries,
            show_progress=show_progress,
            spend_ledger=spend_ledger,
            outage_budget=outage_budget,
            redis_url=redis_url,
            limit_name=limit_name,
            cache=None if isinstance(cache, ResponseCache) else cache,
        )
        self.settings = settings
        self.llm_client = llm_client
        self.max_workers = settings.max_workers
        self.rate_limit = settings.rate_limit
        self.enable_checkpointing = settings.enable_checkpointing
        self.checkpoint_manager = CheckpointManager(settings.checkpoint_dir)
        self.retry_policy = retry_policy or RetryPolicy(
            settings.max_retries, backoff or ExponentialBackoff()
        )
        self.max_retries = self.retry_policy.max_retries
        # The current batch's stop event: waits at the limiter end early on Ctrl-C.
        self._stop = threading.Event()
        if rate_limiter is None and settings.redis_url:
            rate_limiter = RedisRateLimiter(
                settings.rate_limit,
                redis_url=settings.redis_url,
                name=settings.limit_name or default_limit_name(llm_client),
                tokens_per_minute=settings.tokens_per_minute,
                sleep=self._wait,
            )
        self.rate_limiter = rate_limiter or RateLimiter(
            settings.rate_limit, tokens_per_minute=settings.tokens_per_minute, sleep=self._wait
        )
        self.cache = (
            cache
            if isinstance(cache, ResponseCache)
            else ResponseCache(settings.cache_path)
            if settings.cache_path is not None
            else None
        )
        self.rate_control = (
            AdaptiveRate(self.rate_limiter, self.rate_limiter.rate) if adaptive_rate else None
        )
        self.outage_gate = OutageGate(settings.outage_budget)
        self.prices = prices
        self.spend_ledger = SpendLedger(settings.spend_ledger) if settings.spend_ledger else None
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

        With checkpointing on, the journal of ``checkpoint_name`` (default: named after the
        task classes) is continued: a task whose id and request key (model, messages,
        parameters, ``version``) match a record that succeeded is answered from it, re-parsed by
        its own ``parse_response``; new, changed and failed tasks run. Ctrl-C raises
        ``BatchInterrupted`` after saving what finished.

        ``on_task_complete`` sees every task's result as it ends, those answered from the
        checkpoint (``from_checkpoint``) included. ``fail_fast`` cancels every task not yet
        started once one fails; ``timeout`` (seconds) does the same when the batch runs longer.
        Running calls finish either way.
        """
        task_list = list(tasks)
        graph = TaskGraph.build(task_list)
        started = time.perf_counter()
        name = checkpoint_name or default_checkpoint_name(task_list)
        checkpoint = (
            self.checkpoint_manager.open_for_batch(name, resume_from_checkpoint)
            if self.enable_checkpointing
            else None
        )
        journal = None
        if checkpoint is not None:
            journal = self.checkpoint_manager.start_journal(
                checkpoint, self.settings.checkpoint_interval
            )
            journal.start_run(len(task_list))
        progress = BatchProgress(len(task_list), 0, self.settings.show_progress)
        scheduler = BatchScheduler(
            task_list,
            graph,
            [None] * len(task_list),
            Outlet(journal, progress, on_task_complete),
            fail_fast=fail_fast,
            max_batch_size=self.max_batch_size,
        )
        batch = _Batch(name, scheduler, progress, checkpoint, client_model(self.llm_client))
        # A fresh event per batch: workers abandoned by an interrupted batch stay stopped.
        self._stop = scheduler.stop
        self.outage_gate.reset()
        self._on_task_start = on_task_start
        timer = None
        if timeout is not None:
            timer = threading.Timer(
                timeout, scheduler.cancel, args=(f"cancelled: over {timeout:g}s",)
            )
            timer.daemon = True
            timer.start()
        try:
            self._run_workers(batch, min(self.max_workers, scheduler.pending))
        except KeyboardInterrupt:
            done = sum(r is not None for r in scheduler.results)
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
            progress.close()
            if journal is not None:
                journal.close()
            if self.spend_ledger is not None:
                self.spend_ledger.close()
        final = [r for r in scheduler.results if r is not None]
        metrics = batch_metrics(
            len(task_list), final, progress.counts, time.perf_counter() - started
        )
        return BatchResult(final, metrics, checkpoint.path if checkpoint is not None else None)

    def execute_stream(
        self,
        tasks: Iterable[LLMTask],
        checkpoint_name: str | None = None,
        resume_from_checkpoint: bool = True,
        on_task_complete: Callable[[TaskResult], object] | None = None,
        *,
        window: int | None = None,
    ) -> ResultStream:
        """Run tasks from any iterable (a generator over a file), yielding results in input
        order as they are ready, while holding at most ``window`` tasks and results in memory
        (default: 4 per worker), whatever the input's length.

        Resume works as for ``execute_batch`` (the journal of ``checkpoint_name``, default
        ``stream``, answers the tasks it already holds), without reading the input or the
        journal into memory: the journal is indexed on disk. Tasks must be independent (no
        ``dependencies``) and their ids unique. After the last result, the stream's ``metrics``
        and ``checkpoint_path`` are set.
        """
        return ResultStream(
            self,
            iter(tasks),
            checkpoint_name or "stream",
            resume_from_checkpoint,
            on_task_complete,
            window or 4 * self.max_workers,
        )

    def _stream(self, stream: ResultStream) -> Generator[TaskResult, None, None]:
        started = time.perf_counter()
        checkpoint, index = None, None
        if self.enable_checkpointing:
            checkpoint, index = self.checkpoint_manager.open_for_stream(
                stream.name, stream.resume, self.checkpoint_manager.checkpoint_dir
            )
        journal = None
        if checkpoint is not None:
            journal = self.checkpoint_manager.start_journal(
                checkpoint, self.settings.checkpoint_interval
            )
            stream.checkpoint_path = checkpoint.path
        progress = BatchProgress(None, 0, self.settings.show_progress)
        scheduler = StreamScheduler(
            stream.source,
            stream.window,
            Outlet(journal, progress, stream.on_task_complete),
            max_batch_size=self.max_batch_size,
        )
        batch = _Batch(stream.name, scheduler, progress, index, client_model(self.llm_client))
        self._stop = scheduler.stop
        self._on_task_start = None
        self.outage_gate.reset()
        tally = MetricsTally()
        threads = self._start_workers(batch, self.max_workers)
        try:
            for result in scheduler.results_in_order():
                tally.add(result)
                yield result
            if not scheduler.stop.is_set() and journal is not None:
                journal.start_run(scheduler.taken_total)
        except KeyboardInterrupt:
            self._stop_workers(batch, threads)
            where = f"; finished work saved to {checkpoint.path}" if checkpoint else ""
            raise BatchInterrupted(
                f"interrupted after {scheduler.done} results{where}; run the stream again "
                f"with checkpoint_name={stream.name!r} to resume",
                stream.name,
                checkpoint.path if checkpoint else None,
            ) from None
        finally:
            scheduler.request_stop()
            self.outage_gate.wake()
            progress.close()
            if journal is not None:
                journal.close()
            if index is not None:
                index.close()
            if self.spend_ledger is not None:
                self.spend_ledger.close()
            wall = time.perf_counter() - started
            stream.metrics = tally.metrics(scheduler.taken_total, progress.counts, wall)

    def _wait(self, seconds: float) -> None:
        """The limiter's sleep: ends early when the current batch is stopped."""
        self._stop.wait(seconds)

    def _run_workers(self, batch: _Batch, count: int) -> None:
        threads = self._start_workers(batch, count)
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            self._stop_workers(batch, threads)
            raise

    def _start_workers(self, batch: _Batch, count: int) -> list[threading.Thread]:
        threads = [
            threading.Thread(
                target=self._worker, args=(batch,), name=f"aita-worker-{i}", daemon=True
            )
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _stop_workers(self, batch: _Batch, threads: list[threading.Thread]) -> None:
        """Stop handing out work and give calls in flight a few seconds to finish (a second
        Ctrl-C stops waiting)."""
        batch.scheduler.request_stop()
        self.outage_gate.wake()
        deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
        try:
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            pass

    def _worker(self, batch: _Batch) -> None:
        scheduler = batch.scheduler
        while (job := scheduler.next_job()) is not None:
            if self._on_task_start is not None:
                for task in job.tasks:
                    self._on_task_start(task)
            if len(job.tasks) > 1:
                if not self._run_combined(batch, job):
                    return
                continue
            result = self._run_task(batch, job.tasks[0])
            if result is None:  # stopped mid-task: not finished, not recorded
                return
            scheduler.finish(job.indices[0], result)
            batch.forget(job.tasks[0])

    def _run_combined(self, batch: _Batch, job: Job) -> bool:
        """One call for several batchable tasks, split back; False if stopped by Ctrl-C.

        Members answered in an earlier run are finished from the journal first. A member missing
        from the split (or every member, if the combined call failed) goes back to the queue to
        run on its own.
        """
        scheduler = batch.scheduler
        members: list[tuple[int, LLMTask, str | None]] = []
        for index, task in zip(job.indices, job.tasks, strict=True):
            key = self._key_of(batch, task)
            earlier = batch.earlier_answer(task, key) if key is not None else None
            if earlier is not None:
                scheduler.finish(index, earlier)
                batch.forget(task)
            else:
                members.append((index, task, key))
        if len(members) < 2:
            scheduler.run_alone([index for index, _, _ in members])
            return True
        first = members[0][1]
        assert isinstance(first, BatchableLLMTask)
        combined = first.combine_with([task for _, task, _ in members[1:]])  # type: ignore[misc]
        result = self._run_task(batch, combined, look_back=False)
        if result is None:
            return False
        answers: dict[str, Any] = {}
        if result.success and not result.used_fallback:
            try:
                answers = combined.split_batch_result(result.result)
            except Exception as error:
                log.warning("could not split the answer of %s: %s", combined.task_id, error)
        missing = []
        for index, task, key in members:
            if task.task_id in answers:
                value = answers[task.task_id]
                scheduler.finish(index, share_of(result, task.task_id, value, len(members), key))
                batch.forget(task)
            else:
                missing.append(index)
        if missing:
            scheduler.run_alone(missing)
        return True

    def _key_of(self, batch: _Batch, task: LLMTask) -> str | None:
        try:
            return request_key(
                batch.model, task.build_messages(), task.request_params(), task.version
            )
        except Exception:
            return None  # the task cannot even build its request: it fails when it runs alone

    # -- one task: the retry loop ----------------------------------------------------------

    def _run_task(
        self, batch: _Batch, task: LLMTask, *, look_back: bool = True
    ) -> TaskResult | None:
        """The task's answer from the journal if it asked the same before (``look_back``), else
        attempts until it succeeds or the retry policy gives up; None if the batch was stopped
        (Ctrl-C) in the meantime."""
        run = TaskRun(task.task_id, self.prices)
        try:
            messages = task.build_messages()
            params = task.request_params()
        except Exception as error:  # a bug in the task, not the provider: no retry
            return self._give_up(task, run, error, 0)
        run.key = request_key(batch.model, messages, params, task.version)
        if look_back and (earlier := batch.earlier_answer(task, run.key)) is not None:
            return earlier
        if self.cache is not None and (cached := self._from_cache(batch, task, run)) is not None:
            return cached
        return self._attempts(batch, task, run, messages, params)

    def _from_cache(self, batch: _Batch, task: LLMTask, run: TaskRun) -> TaskResult | None:
        """The answer the cache holds for this exact request, if it still parses: no call,
        no cost; counted as cached (and written to the spend ledger as such)."""
        assert self.cache is not None and run.key is not None
        response = self.cache.get(run.key)
        if response is None:
            return None
        try:
            value = task.parse_response(response.content)
        except Exception:
            return None  # the parser changed and rejects it: ask again
        batch.cached(response, self.spend_ledger)
        return run.from_cache(value, response)

    def _attempts(
        self,
        batch: _Batch,
        task: LLMTask,
        run: TaskRun,
        messages: list[LLMMessage],
        params: dict[str, Any],
    ) -> TaskResult | None:
        stop = batch.scheduler.stop
        estimate = self._token_estimate(task, messages, params)
        attempt = 0
        while True:
            try:
                probe = self.outage_gate.enter()  # waits while the provider is down
            except ProviderOutage as error:
                batch.scheduler.cancel(f"cancelled: {error}")
                return self._give_up(task, run, error, attempt)
            waited = self.rate_limiter.acquire(estimate)
            if stop.is_set():
                return None
            sent_at = time.monotonic()
            reached = False  # the provider answered, whatever it said
            try:
                with self.concurrency.slot():  # "auto" workers: waits while the server is full
                    response = run.call(self.llm_client, messages, params)
                reached = True
                self.outage_gate.answered()
                batch.spent(response, run.last_cost, self.spend_ledger)
                self._learn_from(response, estimate)
                value = self._read(task, response, batch)
            except Exception as error:
                decision = self.retry_policy.decide(error, attempt, task)
                batch.progress.attempt(waited, decision.pause_all, decision.retry)
                reached = reached or _server_answered(error)
                if decision.outage or (probe and not reached):
                    self.outage_gate.failed(probe)
                    if decision.outage:  # the provider is down: wait for it, keep the retries
                        continue
                elif reached:
                    self.outage_gate.answered()
                if decision.pause_all:  # every worker waits, not just this one
                    self._pause_everyone(error, decision.delay, sent_at)
                if not decision.retry:
                    if decision.stop_batch:
                        reason = f"cancelled: the provider refused the API key ({error})"
                        batch.scheduler.cancel(reason)
                    return self._give_up(task, run, error, attempt)
                attempt += 1
                if stop.wait(0.0 if decision.pause_all else decision.delay):
                    return None
                messages = task.revise_messages(messages, error)
                continue
            batch.progress.attempt(waited, False, False)
            if self.cache is not None and not response.simulated and run.key is not None:
                self.cache.put(run.key, response)
            return run.succeeded(value, attempt)

    def _read(self, task: LLMTask, response: LLMResponse, batch: _Batch) -> Any:
        """The task's result from an answer; an answer cut off at the token limit is counted and
        logged, and an error if the task says so."""
        if response.truncated:
            batch.progress.truncated()
            if task.truncation_is_error:
                raise TruncatedResponse(
                    "the answer was cut off at the token limit (finish_reason=length)"
                )
            log.warning("task %s: the answer was cut off at the token limit", task.task_id)
        return _parse(task, response)

    def _token_estimate(
        self, task: LLMTask, messages: list[LLMMessage], params: dict[str, Any]
    ) -> int:
        """With a token budget: the prompt plus the answer's cap (or its typical size)."""
        if not self.rate_limiter.tokens_per_minute:
            return 0
        answer = params.get("max_tokens") or params.get("max_completion_tokens")
        return estimate_prompt_tokens(messages) + int(answer or task.expected_output_tokens)

    def _learn_from(self, response: LLMResponse, estimate: int) -> None:
        """The token budget gets the real usage back; rate control reads the limit headers."""
        if estimate and response.usage.total_tokens:
            self.rate_limiter.correct(response.usage.total_tokens - estimate)
        if response.headers and self.rate_control is not None:
            self.rate_control.on_response(response.headers)

    def _pause_everyone(self, error: Exception, delay: float, sent_at: float) -> None:
        if self.rate_control is not None and isinstance(error, RateLimited):
            self.rate_control.on_rate_limited(error, delay, sent_at)
        else:
            self.rate_limiter.pause(delay)

    def _give_up(self, task: LLMTask, run: TaskRun, error: Exception, attempt: int) -> TaskResult:
        """The failed result, or the task's fallback if it has one."""
        if task.has_fallback:
            try:
                return run.fell_back(error, attempt, task.fallback(error))
            except Exception as fallback_error:
                log.warning("fallback of task %s failed: %s", task.task_id, fallback_error)
        return run.failed(error, attempt)


@dataclass
class _Batch:
    """One running batch as its workers see it."""

    name: str
    scheduler: Scheduler
    progress: BatchProgress
    #: where earlier answers are looked up: the journal in memory, or indexed on disk
    checkpoint: Checkpoint | JournalIndex | None
    #: the client's model: part of every request key
    model: str
    _looked_up: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def earlier_answer(self, task: LLMTask, key: str) -> TaskResult | None:
        """The task's answer from the journal, if it asked exactly this before; counts how the
        task stood (reused, changed, new, rerun) the first time it is looked up."""
        result, standing = (
            (None, "new") if self.checkpoint is None else self.checkpoint.answer_for(task, key)
        )
        with self._lock:
            first_time = task.task_id not in self._looked_up
            self._looked_up.add(task.task_id)
        if first_time:
            self.progress.stood(standing)
        return result

    def forget(self, task: LLMTask) -> None:
        """The task has ended: its id need not be remembered (a stream holds a window only)."""
        with self._lock:
            self._looked_up.discard(task.task_id)

    def cached(self, response: LLMResponse, ledger: SpendLedger | None) -> None:
        """An answer from the response cache: counted, and in the ledger at no cost."""
        self.progress.cached()
        if ledger is not None:
            ledger.record(
                batch=self.name,
                model=response.model or self.model,
                prompt_tokens=0,
                completion_tokens=0,
                cost=0.0,
                cached=True,
            )

    def spent(self, response: LLMResponse, cost: float | None, ledger: SpendLedger | None) -> None:
        """A paid call goes into the ledger; an answer of the simulator is never spend."""
        self.progress.answered(cost is not None, response.simulated)
        if ledger is None or response.simulated:
            return
        ledger.record(
            batch=self.name,
            model=response.model or self.model,
            prompt_tokens=response.usage.prompt_tokens,
            completion_tokens=response.usage.completion_tokens,
            cost=cost,
        )


class ResultStream:
    """The results of ``execute_stream``, in input order, as an iterator (iterate once).

    ``metrics`` and ``checkpoint_path`` are set once the stream has ended (or was closed).
    """

    def __init__(
        self,
        executor: ParallelLLMExecutor,
        source: Iterator[LLMTask],
        name: str,
        resume: bool,
        on_task_complete: Callable[[TaskResult], object] | None,
        window: int,
    ) -> None:
        self.source = source
        self.name = name
        self.resume = resume
        self.on_task_complete = on_task_complete
        self.window = window
        self.metrics: ExecutionMetrics | None = None
        self.checkpoint_path: Path | None = None
        self._results: Generator[TaskResult, None, None] = executor._stream(self)

    def __iter__(self) -> Iterator[TaskResult]:
        return self._results

    def __next__(self) -> TaskResult:
        return next(self._results)

    def close(self) -> None:
        """Stop early: workers stop after their calls in flight, the journal is closed."""
        self._results.close()


def _server_answered(error: Exception) -> bool:
    """The provider sent an HTTP answer (a refusal is an answer: it is reachable)."""
    return isinstance(error, ProviderError) and error.status_code is not None


def _parse(task: LLMTask, response: LLMResponse) -> Any:
    try:
        return task.parse_response(response.content)
    except Exception as error:
        if isinstance(error, ValidationError):
            where, what = validation_problem(error, show_input=False)
            reason = f"{where}: {what}" if where else what
        else:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if response.truncated:
            reason += " (the answer was cut off at the token limit)"
        raise ResponseParseError(
            f"could not parse the response: {reason}", response.content
        ) from error


def _cache_path(given: bool | str | Path | None, configured: bool, path: Path) -> Path | None:
    """The cache file: ``given`` (True, False, or a file) wins over ``AITA_CACHE``."""
    if given is None:
        given = configured
    if given is False:
        return None
    return path if given is True else Path(given).expanduser()


def default_checkpoint_name(tasks: list[LLMTask]) -> str:
    """``batch_<task classes>``: unnamed batches of the same kinds of task share a journal,
    which is safe because each task is reused only for the same request."""
    kinds = sorted({type(task).__name__ for task in tasks}) or ["empty"]
    return "batch_" + "_".join(kinds)


def create_executor(llm_client: LLMClient, **kwargs: Any) -> ParallelLLMExecutor:
    """An executor with settings from the config, overridden by ``kwargs``."""
    return ParallelLLMExecutor(llm_client, **kwargs)
