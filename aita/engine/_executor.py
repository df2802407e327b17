"""The executor: a batch of tasks on a thread pool, one result per task in input order.

The thread driver of a task's life (``_lifecycle``): ``execute_batch`` opens the checkpoint
journal and starts the workers; a worker takes a job from the scheduler (``_scheduler``); the
lifecycle prepares the task and looks back for an earlier answer; the worker waits (the outage
gate, the limiter, a backoff) and asks the client; the lifecycle settles the answer or the error
(with the retry policy's decision); the finished task goes back to the scheduler, which has the
lifecycle journal it before it releases the tasks that waited for it. Whatever a job raises is
its tasks' failed result; a ``RunFailed`` stops the run. Ctrl-C stops dispatch, lets calls in
flight finish briefly, and raises ``BatchInterrupted``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from aita.config import get_config
from aita.engine._adaptive import AdaptiveRate
from aita.engine._cache import ResponseCache
from aita.engine._client import LLMClient, LLMResponse, checked_response
from aita.engine._concurrency import AUTO_MAX_WORKERS, NO_CONCURRENCY_LIMIT, ConcurrencyLimit
from aita.engine._graph import TaskGraph
from aita.engine._journal import Checkpoint, CheckpointJournal, CheckpointManager, JournalIndex
from aita.engine._keys import client_model, client_server
from aita.engine._ledger import SpendLedger
from aita.engine._lifecycle import Lifecycle, Prepared
from aita.engine._limiter import RateLimiter
from aita.engine._loop_driver import LoopDriver, answers_on_a_loop, start_loop_thread
from aita.engine._outage import OutageGate
from aita.engine._progress import BatchProgress
from aita.engine._results import (
    BatchResult,
    ExecutionMetrics,
    MetricsTally,
    TaskResult,
    batch_metrics,
    share_of,
)
from aita.engine._retry import Backoff, ExponentialBackoff, RetryPolicy
from aita.engine._scheduler import BatchScheduler, Job, Scheduler
from aita.engine._shared_limiter import RedisRateLimiter, default_limit_name
from aita.engine._stream import StreamScheduler
from aita.engine._tasks import BatchableLLMTask, LLMTask
from aita.engine._telemetry import Telemetry
from aita.errors import (
    ProviderNeverReached,
    ProviderOutage,
    ProviderTimeout,
    RateLimited,
    RunFailed,
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
    #: USD per million (prompt, completion) tokens by model, over the price table's
    prices: Mapping[str, tuple[float, float]] | None = None
    #: how many compatible ``BatchableLLMTask``s share one call (None: the task's own)
    max_batch_size: int | None = None
    #: follow the provider's rate-limit headers and 429s
    adaptive_rate: bool = True

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
        prices: Mapping[str, tuple[float, float]] | None = None,
        max_batch_size: int | None = None,
        adaptive_rate: bool = True,
    ) -> ExecutorSettings:
        """The settings of these arguments, the configured ones for those left unset."""
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
            prices=prices,
            max_batch_size=max_batch_size,
            adaptive_rate=adaptive_rate,
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
    ``telemetry`` sends spans and metrics to OpenTelemetry (default: the global providers, if
    any are configured; see ``Telemetry``).

    ``settings`` (an ``ExecutorSettings``, e.g. ``ExecutorSettings.resolve(max_workers=4)``)
    gives every plain setting at once, in place of their keywords; ``backoff``,
    ``retry_policy``, ``rate_limiter``, a ``ResponseCache`` and ``telemetry`` stay keywords
    (they are objects).
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
        settings: ExecutorSettings | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        # "auto": as many worker threads as may ever help, the calls in flight limited by latency
        self.concurrency = ConcurrencyLimit() if max_workers == "auto" else NO_CONCURRENCY_LIMIT
        settings = settings or ExecutorSettings.resolve(
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
            prices=prices,
            max_batch_size=max_batch_size,
            adaptive_rate=adaptive_rate,
        )
        self.settings = settings
        self.llm_client = llm_client
        self.max_workers = settings.max_workers
        self.rate_limit = settings.rate_limit
        self.enable_checkpointing = settings.enable_checkpointing
        self.checkpoint_manager = CheckpointManager(settings.checkpoint_dir)
        self.retry_policy = retry_policy or RetryPolicy(
            settings.max_retries,
            backoff or ExponentialBackoff(),
            longest_wait=settings.outage_budget,
        )
        self.max_retries = self.retry_policy.max_retries
        # Each worker's run's stop event: its waits at the limiter end early on Ctrl-C.
        self._local = threading.local()
        #: the provider has answered a run of this executor (an outage, not a wrong URL)
        self._reached = False
        #: the executor made the limiter (the loop driver may take over its waits)
        self._own_limiter = rate_limiter is None
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
            AdaptiveRate(self.rate_limiter, self.rate_limiter.rate)
            if settings.adaptive_rate
            else None
        )
        self.prices = settings.prices
        self.spend_ledger = SpendLedger(settings.spend_ledger) if settings.spend_ledger else None
        self.max_batch_size = settings.max_batch_size
        self.telemetry = telemetry or Telemetry()

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
        checkpoint (``source == "journal"``) included. ``fail_fast`` cancels every task not yet
        started once one fails; ``timeout`` (seconds) does the same when the batch runs longer.
        Running calls finish either way. Whatever a task raises is its failed result; a journal
        that cannot be written, or a provider that never answered, raises ``RunFailed`` within
        seconds, with what finished saved.
        """
        task_list = list(tasks)
        graph = TaskGraph.build(task_list)
        started = time.perf_counter()
        name = checkpoint_name or default_checkpoint_name(task_list)
        checkpoint, journal = None, None
        if self.enable_checkpointing:
            with _writing(self.checkpoint_manager.checkpoint_dir):
                checkpoint = self.checkpoint_manager.open_for_batch(name, resume_from_checkpoint)
                journal = self.checkpoint_manager.start_journal(
                    checkpoint, self.settings.checkpoint_interval
                )
            with _writing(journal.path):
                journal.start_run(len(task_list))
        progress = BatchProgress(len(task_list), 0, self.settings.show_progress)
        life = self._lifecycle(name, progress, checkpoint, journal, on_task_complete)
        life.trace = self.telemetry.batch(name, len(task_list), self.llm_client, self.rate_limiter)
        scheduler = BatchScheduler(
            task_list,
            graph,
            [None] * len(task_list),
            life,
            fail_fast=fail_fast,
            max_batch_size=self.max_batch_size,
        )
        run = _Run(scheduler, life, self._gate(), on_task_start)
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, run.cancel, args=(f"cancelled: over {timeout:g}s",))
            timer.daemon = True
            timer.start()
        try:
            with life.trace:
                self._run_workers(run, min(self.max_workers, scheduler.pending))
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
            self._reached = self._reached or run.gate.reached
            progress.close()
            _close(journal)
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
        total: int | None = None,
        done: int = 0,
    ) -> ResultStream:
        """Run tasks from any iterable (a generator over a file), yielding results in input
        order as they are ready, while holding at most ``window`` tasks and results in memory
        (default: 4 per worker), whatever the input's length.

        Resume works as for ``execute_batch`` (the journal of ``checkpoint_name``, default
        ``stream``, answers the tasks it already holds), without reading the input or the
        journal into memory: the journal is indexed on disk. Tasks must be independent (no
        ``dependencies``) and their ids unique. After the last result, the stream's ``metrics``
        and ``checkpoint_path`` are set. ``total`` and ``done``, when the caller knows them (the
        whole job's size, and how much of it an earlier run finished), give the progress bar a
        total, a percentage and an estimate of the time left.
        """
        stream = ResultStream(
            self,
            iter(tasks),
            checkpoint_name or "stream",
            resume_from_checkpoint,
            on_task_complete,
            window or 4 * self.max_workers,
        )
        stream.progress_total, stream.progress_done = total, done
        return stream

    def _stream(self, stream: ResultStream) -> Generator[TaskResult, None, None]:
        started = time.perf_counter()
        checkpoint, index, journal = None, None, None
        if self.enable_checkpointing:
            with _writing(self.checkpoint_manager.checkpoint_dir):
                checkpoint, index = self.checkpoint_manager.open_for_stream(
                    stream.name, stream.resume, self.checkpoint_manager.checkpoint_dir
                )
                journal = self.checkpoint_manager.start_journal(
                    checkpoint, self.settings.checkpoint_interval
                )
            stream.checkpoint_path = checkpoint.path
        progress = BatchProgress(
            stream.progress_total, stream.progress_done, self.settings.show_progress
        )
        life = self._lifecycle(stream.name, progress, index, journal, stream.on_task_complete)
        life.trace = self.telemetry.batch(stream.name, None, self.llm_client, self.rate_limiter)
        scheduler = StreamScheduler(
            stream.source, stream.window, life, max_batch_size=self.max_batch_size
        )
        run = _Run(scheduler, life, self._gate(), None)
        tally = MetricsTally()
        threads = self._start_workers(run, self.max_workers)
        try:
            for result in scheduler.results_in_order():
                tally.add(result)
                yield result
            if not scheduler.stop.is_set() and journal is not None:
                with _writing(journal.path):
                    journal.start_run(scheduler.taken_total)
        except KeyboardInterrupt:
            self._stop_workers(run, threads)
            where = f"; finished work saved to {checkpoint.path}" if checkpoint else ""
            raise BatchInterrupted(
                f"interrupted after {scheduler.done} results{where}; run the stream again "
                f"with checkpoint_name={stream.name!r} to resume",
                stream.name,
                checkpoint.path if checkpoint else None,
            ) from None
        finally:
            life.trace.end()
            scheduler.request_stop()
            run.gate.wake()
            self._reached = self._reached or run.gate.reached
            progress.close()
            _close(journal)
            if index is not None:
                index.close()
            if self.spend_ledger is not None:
                self.spend_ledger.close()
            wall = time.perf_counter() - started
            stream.metrics = tally.metrics(scheduler.taken_total, progress.counts, wall)

    def _lifecycle(
        self,
        name: str,
        progress: BatchProgress,
        lookup: Checkpoint | JournalIndex | None,
        journal: CheckpointJournal | None,
        on_task_complete: Callable[[TaskResult], object] | None,
    ) -> Lifecycle:
        redact = getattr(self.llm_client, "redact", None)
        return Lifecycle(
            name=name,
            model=client_model(self.llm_client),
            progress=progress,
            retry_policy=self.retry_policy,
            lookup=lookup,
            journal=journal,
            cache=self.cache,
            server=client_server(self.llm_client),
            ledger=self.spend_ledger,
            prices=self.prices,
            on_task_complete=on_task_complete,
            redact=redact if callable(redact) else _unchanged,
            token_budget=bool(self.rate_limiter.tokens_per_minute),
        )

    def _gate(self) -> OutageGate:
        """A run's outage gate; a provider that answered an earlier run is known reachable."""
        return OutageGate(self.settings.outage_budget, reached=self._reached)

    # -- the workers ---------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        """The limiter's sleep: in a worker, it ends early when the worker's run is stopped."""
        stop: threading.Event | None = getattr(self._local, "stop", None)
        if stop is None:
            time.sleep(seconds)
        else:
            stop.wait(seconds)

    def _run_workers(self, run: _Run, count: int) -> None:
        """Start the workers and wait for them; once the run has failed, they get the grace of
        an interrupt and ``RunFailed`` is raised (no wait on a worker that cannot finish)."""
        threads = self._start_workers(run, count)
        try:
            for thread in threads:
                while thread.is_alive() and run.scheduler.fatal is None:
                    thread.join(0.25)
            if run.scheduler.fatal is not None:
                self._stop_workers(run, threads)
        except KeyboardInterrupt:
            self._stop_workers(run, threads)
            raise
        if run.scheduler.fatal is not None:
            raise run.scheduler.fatal

    def _start_workers(self, run: _Run, count: int) -> list[threading.Thread]:
        """``count`` calls in flight: coroutines on one event-loop thread for a client that
        answers on a loop (the built-in one: ``_loop_driver``), else a thread each."""
        # "auto" workers pace calls with a blocking slot: they keep the thread pool
        if answers_on_a_loop(self.llm_client) and self.concurrency is NO_CONCURRENCY_LIMIT:
            driver = LoopDriver(self, run, lambda: count)
            return [start_loop_thread(driver, "aita-worker-loop")]
        threads = [
            threading.Thread(target=self._worker, args=(run,), name=f"aita-worker-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _stop_workers(self, run: _Run, threads: list[threading.Thread]) -> None:
        """Stop handing out work and give calls in flight a few seconds to finish (a second
        Ctrl-C stops waiting)."""
        run.scheduler.request_stop()
        run.gate.wake()
        deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
        try:
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            pass

    def _worker(self, run: _Run) -> None:
        """Jobs until there are none. Whatever a job raises is its tasks' failed result; a
        ``RunFailed`` (or a failure to record one) stops the run: no worker dies silently."""
        self._local.stop = run.scheduler.stop
        try:
            while (job := run.scheduler.next_job()) is not None:
                ended: set[int] = set()
                try:
                    if not self._run_job(run, job, ended):
                        return  # stopped (Ctrl-C): not finished, not recorded
                except RunFailed:
                    raise
                except BaseException as error:
                    for index, task in zip(job.indices, job.tasks, strict=True):
                        if index not in ended:
                            run.finish(index, run.life.failed(task, error), ended)
        except BaseException as error:
            fatal = error if isinstance(error, RunFailed) else RunFailed(f"internal error: {error}")
            run.scheduler.abort(fatal)
            run.gate.wake()
        finally:
            self._local.stop = None

    def _run_job(self, run: _Run, job: Job, ended: set[int]) -> bool:
        """One job to its end; False if the run was stopped in the middle."""
        if run.on_task_start is not None:
            for task in job.tasks:
                run.on_task_start(task)
        if len(job.tasks) > 1:
            return self._run_combined(run, job, ended)
        result = self._run_task(run, job.tasks[0])
        if result is None:
            return False
        run.finish(job.indices[0], result, ended)
        return True

    def _run_combined(self, run: _Run, job: Job, ended: set[int]) -> bool:
        """One call for several batchable tasks, split back; False if stopped by Ctrl-C.

        Members answered in an earlier run are finished from it first. A member missing from
        the split (or every member, if the combined call failed) goes back to the queue to run
        on its own.
        """
        members: list[tuple[int, LLMTask, str]] = []
        for index, task in zip(job.indices, job.tasks, strict=True):
            step = run.life.prepare(task)
            if isinstance(step, TaskResult):  # it fails on its own, with its own reason
                run.run_alone([index], ended)
            elif (earlier := run.life.look_back(step)) is not None:
                run.finish(index, earlier, ended)
            else:
                members.append((index, task, step.key))
        if len(members) < 2:
            run.run_alone([index for index, _, _ in members], ended)
            return True
        first = members[0][1]
        assert isinstance(first, BatchableLLMTask)
        try:
            combined = first.combine_with([task for _, task, _ in members[1:]])  # type: ignore[misc]
        except Exception as error:
            log.warning("could not combine the tasks of %s: %s", first.task_id, error)
            run.run_alone([index for index, _, _ in members], ended)
            return True
        result = self._run_task(run, combined, journal=False)
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
                run.finish(index, share_of(result, task.task_id, value, len(members), key), ended)
            else:
                missing.append(index)
        run.run_alone(missing, ended)
        return True

    # -- one task: the thread driver's loop of waiting and asking ------------------------------

    def _run_task(self, run: _Run, task: LLMTask, *, journal: bool = True) -> TaskResult | None:
        """The task's answer from an earlier run if it asked the same before, else attempts
        until it succeeds or the retry policy gives up; None if the run was stopped (Ctrl-C) in
        the meantime."""
        step = run.life.prepare(task)
        if isinstance(step, TaskResult):
            return step
        earlier = run.life.look_back(step, journal=journal)
        if earlier is not None:
            return earlier
        return self._attempts(run, step)

    def _attempts(self, run: _Run, step: Prepared) -> TaskResult | None:
        """Wait (outage gate, limiter, backoff), ask, and let the lifecycle settle each attempt."""
        stop, gate, life = run.scheduler.stop, run.gate, run.life
        while True:
            since = time.monotonic() if gate.down else None  # (for the outage's wait span)
            try:
                probe = gate.enter()  # waits while the provider is down
            except ProviderNeverReached:
                raise  # the run stops: no task can be asked
            except ProviderOutage as outage:
                run.cancel(f"cancelled: {outage}")
                return life.give_up(step, outage)
            waited = self.rate_limiter.acquire(step.estimate)
            if stop.is_set():
                return None
            sent_at = time.monotonic()
            started = time.perf_counter()
            response: LLMResponse | None = None
            failure: BaseException | None = None
            life.trace.sending(step.trace, step.attempt, step.params, since, waited)
            queued = 0.0  # "auto" workers: the wait for a slot is a wait, not the call's time
            try:
                with self.concurrency.slot():  # "auto" workers: waits while the server is full
                    queued = time.perf_counter() - started
                    answer: object = self.llm_client.complete(step.messages, **step.params)
                response = checked_response(answer)
            except Exception as raised:
                failure = raised
            seconds = time.perf_counter() - started - queued
            after = self._settle_attempt(
                run, step, response, failure, seconds, waited + queued, probe, sent_at
            )
            if isinstance(after, TaskResult):
                return after
            if stop.wait(after):
                return None

    def _settle_attempt(
        self,
        run: _Run,
        step: Prepared,
        response: LLMResponse | None,
        failure: BaseException | None,
        seconds: float,
        waited: float,
        probe: bool,
        sent_at: float,
    ) -> TaskResult | float:
        """What every driver does once an attempt is over: the lifecycle settles it, the outage
        gate and the limiter learn from it, the run stops if it must. The task's result when it
        ended, else how long to wait before asking again (0: at once, or at the gate)."""
        gate, life = run.gate, run.life
        if response is not None:
            gate.answered()
            self._learn_from(response, step.estimate)
        settled = life.settle(
            step, response=response, error=failure, seconds=seconds, waited=waited
        )
        decision = settled.decision
        if decision is None:  # answered
            assert settled.result is not None
            return settled.result
        error = settled.error
        assert error is not None
        gate.reached = gate.reached or settled.reached  # an HTTP error: it is reachable
        # Before any answer, a timeout is no slow call but a server that never answers.
        down = decision.outage or (not gate.reached and isinstance(error, ProviderTimeout))
        if down or (probe and not settled.reached):
            gate.failed(probe, error)
            if down and settled.result is None:
                return 0.0  # the provider is down: wait for it at the gate, keep the retries
        elif settled.reached:
            gate.answered()
        if decision.pause_all:  # every call waits, not just this one
            self._pause_everyone(error, decision.delay, sent_at)
        if settled.result is not None:
            if decision.stop_batch:
                run.cancel(decision.stop_reason or f"cancelled: {error}")
            return settled.result
        return 0.0 if decision.pause_all else decision.delay

    def _learn_from(self, response: LLMResponse, estimate: int) -> None:
        """The token budget gets the real usage back; rate control reads the limit headers."""
        if estimate and response.usage.total_tokens:
            self.rate_limiter.correct(response.usage.total_tokens - estimate)
        if response.headers and self.rate_control is not None:
            self.rate_control.on_response(response.headers)

    def _pause_everyone(self, error: BaseException, delay: float, sent_at: float) -> None:
        if self.rate_control is not None and isinstance(error, RateLimited):
            self.rate_control.on_rate_limited(error, delay, sent_at)
        else:
            self.rate_limiter.pause(delay)


@dataclass
class _Run:
    """One running batch or stream, as its workers see it: the run's own state, so one executor
    can run several at once."""

    scheduler: Scheduler
    life: Lifecycle
    gate: OutageGate
    on_task_start: Callable[[LLMTask], object] | None

    def finish(self, index: int, result: TaskResult, ended: set[int]) -> None:
        ended.add(index)  # before the journal write: a failed write does not finish it twice
        self.scheduler.finish(index, result)

    def run_alone(self, indices: list[int], ended: set[int]) -> None:
        if indices:
            ended.update(indices)
            self.scheduler.run_alone(indices)

    def cancel(self, reason: str) -> None:
        """Cancel the tasks not yet started (a time limit, an outage, a refused key); a journal
        that cannot record them stops the run."""
        try:
            self.scheduler.cancel(reason)
        except RunFailed as fatal:
            self.scheduler.abort(fatal)
            self.gate.wake()


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A checkpoint file or folder that cannot be written is ``RunFailed`` naming it."""
    try:
        yield
    except OSError as error:
        raise RunFailed(f"{path}: cannot write ({error.strerror or error})") from error


def _close(journal: CheckpointJournal | None) -> None:
    if journal is None:
        return
    try:
        journal.close()
    except OSError as error:
        log.error("%s: could not be synced to disk (%s)", journal.path, error.strerror or error)


def _unchanged(text: str) -> str:
    return text


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
        #: the progress bar's total and what was done before (None: a stream of unknown length)
        self.progress_total: int | None = None
        self.progress_done = 0
        self._results: Generator[TaskResult, None, None] = executor._stream(self)

    def __iter__(self) -> Iterator[TaskResult]:
        return self._results

    def __next__(self) -> TaskResult:
        return next(self._results)

    def close(self) -> None:
        """Stop early: workers stop after their calls in flight, the journal is closed."""
        self._results.close()


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
