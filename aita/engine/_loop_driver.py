"""The event-loop driver: a run's calls as coroutines on one thread, thousands in flight.

The thread-pool driver holds a thread per call in flight; a client that can answer on an event
loop (``acomplete``, as the built-in OpenAI-compatible client does) needs none. Here one thread
runs an asyncio loop with up to ``limit`` worker coroutines (read before every job, so it may
change while the run goes on), each taking job after job and doing what a worker thread does,
in the same order and with the same parts: the outage gate, the rate limiter (its slot taken
with ``reserve``, the waiting done on the loop), the call, the lifecycle's steps, the journal.
Only the waiting differs, and every wait ends early when the run is stopped (Ctrl-C), as a
worker's does.

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

from aita.engine._client import LLMResponse, checked_response
from aita.engine._http import ChatHTTP, connections_for
from aita.engine._lifecycle import Prepared
from aita.engine._limiter import RateLimiter
from aita.engine._results import TaskResult
from aita.engine._scheduler import NOT_YET, Job
from aita.errors import ProviderNeverReached, ProviderOutage, RunFailed

if TYPE_CHECKING:
    from aita.engine._executor import ParallelLLMExecutor, _Run

#: How often the loop looks whether the run was stopped from another thread (Ctrl-C).
STOP_POLL_SECONDS = 0.05


def answers_on_a_loop(client: object) -> bool:
    """The client answers on an event loop (``async def acomplete``)."""
    return inspect.iscoroutinefunction(getattr(client, "acomplete", None))


class LoopDriver:
    """Runs one run's jobs on an event loop in the calling thread (``run``)."""

    def __init__(self, executor: ParallelLLMExecutor, run: _Run, limit: Callable[[], int]) -> None:
        self.executor = executor
        self.run_ = run
        self.limit = limit
        self.client: Any = executor.llm_client
        self._stop = run.scheduler.stop
        self._sleepers: set[asyncio.Future[None]] = set()
        self._workers: set[asyncio.Task[None]] = set()
        #: a worker is waiting in a thread for the next job
        self._waiting = False
        #: the limiter's slots are taken here and waited for on the loop (the executor made it
        #: and it keeps time by the real clock); any other limiter waits in a thread
        self._reserve = executor._own_limiter and (
            type(executor.rate_limiter).acquire is RateLimiter.acquire
        )

    def run(self) -> None:
        """The loop, to the end of the run; a failure of the driver itself stops the run as a
        worker's does (``RunFailed``), never silently."""
        try:
            asyncio.run(self._main())
        except BaseException as error:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        fatal = error if isinstance(error, RunFailed) else RunFailed(f"internal error: {error}")
        self.run_.scheduler.abort(fatal)
        self.run_.gate.wake()

    # -- dispatch ------------------------------------------------------------------------------

    async def _main(self) -> None:
        http = getattr(self.client, "http", None)
        if isinstance(http, ChatHTTP):
            cap = http.connections = connections_for(max(1, self.limit()))
            wanted = self.limit
            self.limit = lambda: min(wanted(), cap)
        watcher = asyncio.get_running_loop().create_task(self._watch_stop())
        try:
            self._spawn()
            while self._workers:
                await asyncio.wait(list(self._workers))
        finally:
            watcher.cancel()
            if isinstance(http, ChatHTTP):
                await http.close_loop_session()

    def _spawn(self) -> None:
        """Workers up to the limit (a coroutine each, taking job after job)."""
        loop = asyncio.get_running_loop()
        for _ in range(self.limit() - len(self._workers)):
            worker = loop.create_task(self._worker())
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def _worker(self) -> None:
        """Jobs until there are none, or more workers than the limit. When no job is ready yet,
        one worker waits for the next in a thread (a finish releases it, or a stream's caller
        adds one) and brings the others back; the rest end, so no wake-up goes to hundreds."""
        scheduler = self.run_.scheduler
        while len(self._workers) <= self.limit():
            job = scheduler.poll_job()
            if job == NOT_YET:
                if self._waiting:
                    return
                self._waiting = True
                try:
                    job = await asyncio.to_thread(scheduler.next_job)
                finally:
                    self._waiting = False
                if isinstance(job, Job):
                    self._spawn()
            if not isinstance(job, Job):
                return
            await self._job(job)

    async def _watch_stop(self) -> None:
        """Wakes every wait of the run once it is stopped (Ctrl-C, a failed run, the end)."""
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
        """One job, contained as a worker thread contains it: whatever it raises is its tasks'
        failed result; ``RunFailed`` (or a failure to record one) stops the run."""
        run = self.run_
        ended: set[int] = set()
        try:
            try:
                await self._run_job(job, ended)
            except (RunFailed, asyncio.CancelledError):
                raise
            except BaseException as error:
                for index, task in zip(job.indices, job.tasks, strict=True):
                    if index not in ended:
                        run.finish(index, run.life.failed(task, error), ended)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self._fail(error)

    async def _run_job(self, job: Job, ended: set[int]) -> None:
        run = self.run_
        if len(job.tasks) > 1:
            # A combined call goes through the client's synchronous path, in a thread.
            await asyncio.to_thread(self._in_thread, job, ended)
            return
        if run.on_task_start is not None:
            run.on_task_start(job.tasks[0])
        step = run.life.prepare(job.tasks[0])
        result = step if isinstance(step, TaskResult) else run.life.look_back(step)
        if result is None:
            assert isinstance(step, Prepared)
            result = await self._attempts(step)
        if result is not None:  # None: stopped mid-task, not finished, not recorded
            run.finish(job.indices[0], result, ended)

    def _in_thread(self, job: Job, ended: set[int]) -> None:
        ex = self.executor
        ex._local.stop = self._stop  # the limiter's waits end early on Ctrl-C
        try:
            ex._run_job(self.run_, job, ended)
        finally:
            ex._local.stop = None

    # -- one task: the waiting and asking of ``ParallelLLMExecutor._attempts``, on the loop -----

    async def _attempts(self, step: Prepared) -> TaskResult | None:
        ex, run = self.executor, self.run_
        stop, gate, life = run.scheduler.stop, run.gate, run.life
        while True:
            since = time.monotonic() if gate.down else None  # (for the outage's wait span)
            try:
                # waits (in a thread) only while the provider is down
                probe = await asyncio.to_thread(gate.enter) if gate.down else False
            except ProviderNeverReached:
                raise  # the run stops: no task can be asked
            except ProviderOutage as outage:
                run.cancel(f"cancelled: {outage}")
                return life.give_up(step, outage)
            waited = await self._acquire(step.estimate)
            if stop.is_set():
                return None
            sent_at = time.monotonic()
            started = time.perf_counter()
            response: LLMResponse | None = None
            failure: BaseException | None = None
            life.trace.sending(step.trace, step.attempt, step.params, since, waited)
            try:
                response = checked_response(
                    await self.client.acomplete(step.messages, **step.params)
                )
            except Exception as raised:
                failure = raised
            seconds = time.perf_counter() - started
            after = ex._settle_attempt(
                run, step, response, failure, seconds, waited, probe, sent_at
            )
            if isinstance(after, TaskResult):
                return after
            if await self._sleep(after):
                return None

    async def _acquire(self, tokens: int) -> float:
        """The limiter's ``acquire``, waiting on the loop; seconds waited."""
        limiter = self.executor.rate_limiter
        if not self._reserve:
            return await asyncio.to_thread(self._acquire_in_thread, tokens)
        waited = 0.0
        while True:
            slot, delay = limiter.reserve(tokens)
            if delay > 0:
                if await self._sleep(delay):
                    return waited
                waited += delay
                if not limiter.stands(slot):
                    continue  # a pause moved it: take the next slot
            while (delay := limiter.start_delay(slot)) > 0:  # a late wake never bursts
                if await self._sleep(delay):
                    return waited
                waited += delay
            return waited

    def _acquire_in_thread(self, tokens: int) -> float:
        ex = self.executor
        ex._local.stop = self._stop
        try:
            return ex.rate_limiter.acquire(tokens)
        finally:
            ex._local.stop = None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def start_loop_thread(driver: LoopDriver, name: str) -> threading.Thread:
    """The driver's loop on a daemon thread, as a worker thread is started."""
    thread = threading.Thread(target=driver.run, name=name, daemon=True)
    thread.start()
    return thread
