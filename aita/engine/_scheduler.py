"""The scheduler: which task of a running batch goes next, and what happens when one ends.

Tasks wait in ``ready`` (input order) once every dependency has succeeded; ``next_job`` hands a
worker the next one (with compatible batchable tasks to share its call, and the results of its
dependencies filled in). A finished task is journalled first, then stored, then releases the
tasks waiting for it; a failed one skips them (and theirs) with the reason. ``cancel``
(fail-fast, a time limit, a refused key) records everything not yet started as cancelled;
``request_stop`` (Ctrl-C) just stops handing out work.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from aita.engine._graph import TaskGraph
from aita.engine._results import TaskResult, not_run
from aita.engine._tasks import BatchableLLMTask, LLMTask
from aita.errors import Cancelled, DependencyFailed


class Outlet(Protocol):
    """Where a finished task goes (``Lifecycle``): ``record`` writes it to the journal (before
    the tasks waiting for it are released), ``announce`` shows it and tells the caller."""

    def record(self, result: TaskResult) -> None: ...
    def announce(self, result: TaskResult) -> None: ...


#: What ``next_job(wait=False)`` returns when a job may come later but none is ready now.
NOT_YET: Final = "not yet"


@dataclass
class Job:
    """What a worker runs next: one task, or several batchable tasks that share one call."""

    indices: list[int]
    tasks: list[LLMTask]


class Scheduler(Protocol):
    """What workers need of a scheduler: a batch's (``BatchScheduler``) or a stream's."""

    stop: threading.Event
    outlet: Outlet
    fatal: BaseException | None

    def next_job(self) -> Job | None:
        job = self._next_job(wait=True)
        return job if isinstance(job, Job) else None

    def poll_job(self) -> Job | Literal["not yet"] | None:
        """``next_job`` without waiting: ``NOT_YET`` when a job may come later (an event
        loop's dispatcher must not block)."""
        return self._next_job(wait=False)

    def _next_job(self, wait: bool) -> Job | Literal["not yet"] | None: ...
    def finish(self, index: int, result: TaskResult) -> None: ...
    def run_alone(self, indices: list[int]) -> None: ...
    def cancel(self, reason: str) -> None: ...
    def request_stop(self) -> None: ...
    def abort(self, error: BaseException) -> None: ...


class WorkQueue:
    """What both schedulers share: the ready tasks in input order, how many are running,
    batchable tasks sent back to run alone, and the stop that Ctrl-C sets."""

    def __init__(self, outlet: Outlet, max_batch_size: int | None) -> None:
        self.outlet = outlet
        self.max_batch_size = max_batch_size
        #: set on Ctrl-C: no more work is handed out, and waits in workers end early
        self.stop = threading.Event()
        #: why the run cannot go on (``abort``): raised to the caller once workers are stopped
        self.fatal: BaseException | None = None
        self._changed = threading.Condition(threading.Lock())
        self._ready: deque[int] = deque()
        self._solo: set[int] = set()  # batchable tasks to run alone from now on
        self._in_flight = 0

    def _take(self, task_of: Callable[[int], LLMTask]) -> list[int]:
        """Under the lock, with a task ready: the next one, and the ready tasks that can share
        its call (compatible batchable ones, up to the batch size; only the head of the queue
        is scanned, so a huge queue costs no quadratic time)."""
        index = self._ready.popleft()
        taken = [index]
        first = task_of(index)
        if isinstance(first, BatchableLLMTask) and index not in self._solo:
            limit = (self.max_batch_size or first.max_batch_size) - 1
            for i in list(itertools.islice(self._ready, 4 * max(0, limit))):
                other = task_of(i)
                compatible = isinstance(other, BatchableLLMTask) and first.can_batch_with(other)
                if compatible and i not in self._solo:
                    taken.append(i)
                    if len(taken) == limit + 1:
                        break
            for i in taken[1:]:
                self._ready.remove(i)
        self._in_flight += len(taken)
        return taken

    def run_alone(self, indices: list[int]) -> None:
        """Put tasks back to run on their own (they were missing from a combined answer)."""
        with self._changed:
            for i in indices:
                self._solo.add(i)
                self._in_flight -= 1
                self._ready.appendleft(i)
            self._changed.notify_all()

    def request_stop(self) -> None:
        with self._changed:
            self.stop.set()
            self._changed.notify_all()

    def abort(self, error: BaseException) -> None:
        """No task can go on (a journal that cannot be written, a provider never reached):
        stop handing out work and wake every waiter; the first reason stands."""
        with self._changed:
            if self.fatal is None:
                self.fatal = error
            self.stop.set()
            self._changed.notify_all()


class BatchScheduler(WorkQueue):
    def __init__(
        self,
        tasks: list[LLMTask],
        graph: TaskGraph,
        results: list[TaskResult | None],
        outlet: Outlet,
        *,
        fail_fast: bool = False,
        max_batch_size: int | None = None,
    ) -> None:
        """``results`` holds the tasks already done (reused from the journal); the rest are
        scheduled."""
        super().__init__(outlet, max_batch_size)
        self.tasks = tasks
        self.graph = graph
        self.results = results
        self.fail_fast = fail_fast
        self._waiting_on: dict[int, int] = {}
        self._cancelled = False
        ready = []
        for i, result in enumerate(results):
            if result is not None:
                continue
            unmet = sum(not _succeeded(results[d]) for d in graph.requires.get(i, ()))
            if unmet:
                self._waiting_on[i] = unmet
            else:
                ready.append(i)
        self._ready = deque(ready)

    @property
    def pending(self) -> int:
        return len(self._ready) + len(self._waiting_on)

    # -- handing out work ----------------------------------------------------------------------

    def next_job(self) -> Job | None:
        job = self._next_job(wait=True)
        return job if isinstance(job, Job) else None

    def poll_job(self) -> Job | Literal["not yet"] | None:
        """``next_job`` without waiting: ``NOT_YET`` when a job may come later (an event
        loop's dispatcher must not block)."""
        return self._next_job(wait=False)

    def _next_job(self, wait: bool) -> Job | Literal["not yet"] | None:
        """The next task to run (waiting while only blocked tasks are left); None when done."""
        with self._changed:
            while not self.stop.is_set():
                if self._ready:
                    indices = self._take(self.tasks.__getitem__)
                    break
                if self._in_flight == 0:
                    return None  # nothing running could unblock what is left
                if not wait:
                    return NOT_YET
                self._changed.wait()
            else:
                return None
            task = self.tasks[indices[0]]
            if task.dependencies:
                task.dependency_results = self._dependency_results(indices[0])
        return Job(indices, [self.tasks[i] for i in indices])

    def _dependency_results(self, index: int) -> dict[str, object]:
        return {
            self.tasks[d].task_id: result.result
            for d in self.graph.requires.get(index, ())
            if (result := self.results[d]) is not None
        }

    # -- ending work ---------------------------------------------------------------------------

    def cancel(self, reason: str) -> None:
        """Record every task not yet started as cancelled; running ones finish normally."""
        with self._changed:
            if self._cancelled:
                return
            self._cancelled = True
            doomed = sorted([*self._ready, *self._waiting_on])
            self._ready.clear()
            self._waiting_on.clear()
            ended = [(i, not_run(self.tasks[i].task_id, Cancelled(reason))) for i in doomed]
            for i, item in ended:
                self.results[i] = item
            self._changed.notify_all()
        for _, item in ended:
            self.outlet.record(item)
            self.outlet.announce(item)

    def finish(self, index: int, result: TaskResult) -> None:
        """Record a finished task, then release (or skip) the tasks that wait for it."""
        self.outlet.record(result)  # before any dependent can start
        skipped: list[TaskResult] = []
        with self._changed:
            self._in_flight -= 1
            self.results[index] = result
            if result.success:
                for d in self.graph.dependents.get(index, ()):
                    if d in self._waiting_on:
                        self._waiting_on[d] -= 1
                        if self._waiting_on[d] == 0:
                            del self._waiting_on[d]
                            self._ready.append(d)
            else:
                reason = DependencyFailed(f"skipped: dependency {result.task_id!r} did not succeed")
                for d in self.graph.descendants(index):
                    if self._waiting_on.pop(d, None) is not None:
                        self.results[d] = not_run(self.tasks[d].task_id, reason)
                        skipped.append(self.results[d])  # type: ignore[arg-type]
            self._changed.notify_all()
        self.outlet.announce(result)
        for item in skipped:
            self.outlet.record(item)
            self.outlet.announce(item)
        if self.fail_fast and not result.success:
            self.cancel(f"cancelled: {result.task_id} failed and fail_fast is on")


def _succeeded(result: TaskResult | None) -> bool:
    return result is not None and result.success
