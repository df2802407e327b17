"""The event-loop driver: a run's calls as coroutines on one thread, thousands in flight.

The thread-pool driver holds a thread per call in flight; a client that can answer on an event
loop (``acomplete``, as the built-in OpenAI-compatible client does) needs none. Here one thread
runs an asyncio loop: a dispatcher takes jobs from the scheduler while fewer than the limit are
in flight (``limit`` is read before every job, so it may change while the run goes on), and each
job is a coroutine that does what a worker thread does, in the same order and with the same
executor parts: the outage gate, the rate limiter (its slot taken with ``reserve``; the waiting
done on the loop), the call, the retry policy, the journal. Only the waiting differs, and every
wait ends early when the run is stopped (Ctrl-C), as a worker's does.

What cannot run on the loop goes to a thread, as before: a combined call of batchable tasks
(rare, and large), a limiter that waits its own way (shared through Redis, or the caller's own),
and waiting at a closed outage gate.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aita.engine._client import LLMMessage
from aita.engine._http import ChatHTTP
from aita.engine._keys import request_key
from aita.engine._limiter import RateLimiter
from aita.engine._results import TaskResult, TaskRun
from aita.engine._scheduler import NOT_YET, Job
from aita.engine._tasks import LLMTask
from aita.errors import ProviderError, ProviderOutage

if TYPE_CHECKING:
    from aita.engine._executor import ParallelLLMExecutor, _Batch

#: How often the loop looks whether the run was stopped from another thread (Ctrl-C).
STOP_POLL_SECONDS = 0.05


def answers_on_a_loop(client: object) -> bool:
    """The client answers on an event loop (``async def acomplete``)."""
    return inspect.iscoroutinefunction(getattr(client, "acomplete", None))


class LoopDriver:
    """Runs one batch's jobs on an event loop in the calling thread (``run``)."""

    def __init__(
        self, executor: ParallelLLMExecutor, batch: _Batch, limit: Callable[[], int]
    ) -> None:
        self.executor = executor
        self.batch = batch
        self.limit = limit
        self.client: Any = executor.llm_client
        self._stop = batch.scheduler.stop
        self._sleepers: set[asyncio.Future[None]] = set()
        #: the limiter's slots are taken here and waited for on the loop (the executor made it
        #: and it keeps time by the real clock); any other limiter waits in a thread
        self._reserve = executor._own_limiter and (
            type(executor.rate_limiter).acquire is RateLimiter.acquire
        )
        self.error: BaseException | None = None

    def run(self) -> None:
        asyncio.run(self._main())
        if self.error is not None:
            raise self.error

    # -- dispatch ------------------------------------------------------------------------------

    async def _main(self) -> None:
        http = getattr(self.client, "http", None)
        if isinstance(http, ChatHTTP):
            http.connections = max(1, self.limit())
        watcher = asyncio.get_running_loop().create_task(self._watch_stop())
        running: set[asyncio.Task[None]] = set()
        room = asyncio.Event()
        scheduler = self.batch.scheduler

        def ended(task: asyncio.Task[None]) -> None:
            running.discard(task)
            room.set()

        try:
            while self.error is None:
                if len(running) >= self.limit():
                    room.clear()
                    await room.wait()
                    continue
                job = scheduler.poll_job()
                if job == NOT_YET:  # wait in a thread: a finish, or a stream's next task
                    job = await asyncio.to_thread(scheduler.next_job)
                if not isinstance(job, Job):
                    break
                task = asyncio.create_task(self._job(job))
                running.add(task)
                task.add_done_callback(ended)
            if running:
                await asyncio.wait(running)
        finally:
            watcher.cancel()
            if isinstance(http, ChatHTTP):
                await http.close_loop_session()

    async def _watch_stop(self) -> None:
        """Wakes every wait of the run once it is stopped from another thread."""
        while not self._stop.is_set():
            await asyncio.sleep(STOP_POLL_SECONDS)
        for sleeper in list(self._sleepers):
            if not sleeper.done():
                sleeper.set_result(None)

    async def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``, or less if the run is stopped; True if it was."""
        if seconds > 0 and not self._stop.is_set():
            loop = asyncio.get_running_loop()
            woken: asyncio.Future[None] = loop.create_future()
            self._sleepers.add(woken)
            timer = loop.call_later(seconds, _wake, woken)
            try:
                await woken
            finally:
                timer.cancel()
                self._sleepers.discard(woken)
        return self._stop.is_set()

    async def _job(self, job: Job) -> None:
        ex, batch = self.executor, self.batch
        try:
            if ex._on_task_start is not None:
                for task in job.tasks:
                    ex._on_task_start(task)
            if len(job.tasks) > 1:
                # A combined call goes through the client's synchronous path, in a thread.
                await asyncio.to_thread(ex._run_combined, batch, job)
                return
            result = await self._run_task(job.tasks[0])
            if result is None:  # stopped mid-task: not finished, not recorded
                return
            batch.scheduler.finish(job.indices[0], result)
            batch.forget(job.tasks[0])
        except BaseException as error:  # a worker thread would die of it: the run stops
            if self.error is None:
                self.error = error
            batch.scheduler.request_stop()

    # -- one task: the retry loop, as ``ParallelLLMExecutor._run_task`` -------------------------

    async def _run_task(self, task: LLMTask) -> TaskResult | None:
        ex, batch = self.executor, self.batch
        run = TaskRun(task.task_id, ex.prices)
        try:
            messages = task.build_messages()
            params = task.request_params()
        except Exception as error:  # a bug in the task, not the provider: no retry
            return ex._give_up(task, run, error, 0)
        run.key = request_key(batch.model, messages, params, task.version)
        if (earlier := batch.earlier_answer(task, run.key)) is not None:
            return earlier
        if ex.cache is not None and (cached := ex._from_cache(batch, task, run)) is not None:
            return cached
        return await self._attempts(task, run, messages, params)

    async def _attempts(
        self, task: LLMTask, run: TaskRun, messages: list[LLMMessage], params: dict[str, Any]
    ) -> TaskResult | None:
        ex, batch = self.executor, self.batch
        gate = ex.outage_gate
        estimate = ex._token_estimate(task, messages, params)
        attempt = 0
        while True:
            try:
                # waits (in a thread) only while the provider is down
                probe = await asyncio.to_thread(gate.enter) if gate.down else False
            except ProviderOutage as error:
                batch.scheduler.cancel(f"cancelled: {error}")
                return ex._give_up(task, run, error, attempt)
            waited = await self._acquire(estimate)
            if self._stop.is_set():
                return None
            sent_at = time.monotonic()
            reached = False
            try:
                response = await run.acall(self.client, messages, params)
                reached = True
                gate.answered()
                batch.spent(response, run.last_cost, ex.spend_ledger)
                ex._learn_from(response, estimate)
                value = ex._read(task, response, batch)
            except Exception as error:
                decision = ex.retry_policy.decide(error, attempt, task)
                batch.progress.attempt(waited, decision.pause_all, decision.retry)
                reached = reached or _server_answered(error)
                if decision.outage or (probe and not reached):
                    gate.failed(probe)
                    if decision.outage:
                        continue
                elif reached:
                    gate.answered()
                if decision.pause_all:
                    ex._pause_everyone(error, decision.delay, sent_at)
                if not decision.retry:
                    if decision.stop_batch:
                        reason = f"cancelled: the provider refused the API key ({error})"
                        batch.scheduler.cancel(reason)
                    return ex._give_up(task, run, error, attempt)
                attempt += 1
                if await self._sleep(0.0 if decision.pause_all else decision.delay):
                    return None
                messages = task.revise_messages(messages, error)
                continue
            batch.progress.attempt(waited, False, False)
            if ex.cache is not None and not response.simulated and run.key is not None:
                ex.cache.put(run.key, response)
            return run.succeeded(value, attempt)

    async def _acquire(self, tokens: int) -> float:
        """The limiter's ``acquire``, waiting on the loop; seconds waited."""
        limiter = self.executor.rate_limiter
        if not self._reserve:
            return await asyncio.to_thread(limiter.acquire, tokens)
        waited = 0.0
        while True:
            slot, delay = limiter.reserve(tokens)
            if delay <= 0:
                return waited
            if await self._sleep(delay):
                return waited
            waited += delay
            if limiter.stands(slot):
                return waited


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _server_answered(error: Exception) -> bool:
    """The provider sent an HTTP answer (a refusal is an answer: it is reachable)."""
    return isinstance(error, ProviderError) and error.status_code is not None


def start_loop_thread(driver: LoopDriver, name: str) -> threading.Thread:
    """The driver's loop on a daemon thread, as a worker thread is started."""
    thread = threading.Thread(target=driver.run, name=name, daemon=True)
    thread.start()
    return thread
