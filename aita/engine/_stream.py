"""The stream scheduler: tasks from any iterable, results in input order, a bounded window.

``execute_stream`` takes tasks as the caller's iterable gives them (a generator over a file of a
million lines) and hands the results back in input order, holding only a window of tasks and
results: at most ``window`` tasks are taken from the iterable and not yet handed back, so memory
follows the worker count, not the input. The caller's thread pulls tasks and yields results;
workers take ready tasks (and compatible batchable ones, to share a call) as in a batch. Tasks in
a stream are independent: one that declares dependencies is refused (``execute_batch`` runs task
graphs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from aita.engine._results import TaskResult, not_run
from aita.engine._scheduler import NOT_YET, Job, Outlet, WorkQueue
from aita.engine._tasks import LLMTask
from aita.errors import Cancelled, TaskGraphError


class StreamScheduler(WorkQueue):
    """The same worker-facing surface as ``BatchScheduler``, over a sliding window."""

    def __init__(
        self,
        source: Iterator[LLMTask],
        window: int,
        outlet: Outlet,
        *,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__(outlet, max_batch_size)
        self._source = source
        self._window = max(1, window)
        self._tasks: dict[int, LLMTask] = {}
        self._results: dict[int, TaskResult] = {}
        self._ids: set[str] = set()  # the ids in the window: a duplicate there is refused
        self._taken = 0  # tasks taken from the source
        self._head = 0  # the next result to hand back
        self._exhausted = False
        self._cancelled: str | None = None
        self.taken_total = 0

    @property
    def pending(self) -> int:
        return self._window  # workers to start: the window bounds them

    # -- the caller's side ---------------------------------------------------------------------

    def results_in_order(self) -> Iterator[TaskResult]:
        """Pull tasks into the window and hand results back in input order, as each is ready."""
        while True:
            self._fill()
            with self._changed:
                while self._head not in self._results:
                    if self.fatal is not None:
                        raise self.fatal
                    if self.stop.is_set() or (self._exhausted and self._head == self._taken):
                        return
                    self._changed.wait()
                result = self._results.pop(self._head)
                task = self._tasks.pop(self._head)
                self._ids.discard(task.task_id)
                self._head += 1
                self._changed.notify_all()
            yield result

    def _fill(self) -> None:
        """Take tasks from the source until the window is full (outside the lock: the source
        may read a file)."""
        while not self._exhausted and self._taken - self._head < self._window:
            try:
                task = next(self._source)
            except StopIteration:
                with self._changed:
                    self._exhausted = True
                    self._changed.notify_all()
                return
            if task.dependencies:
                raise TaskGraphError(
                    f"task {task.task_id!r} has dependencies: a stream runs independent tasks "
                    "(use execute_batch for task graphs)"
                )
            with self._changed:
                if task.task_id in self._ids:
                    raise TaskGraphError(f"duplicate task id in the stream: {task.task_id!r}")
                seq = self._taken
                self._taken += 1
                self.taken_total += 1
                self._tasks[seq] = task
                self._ids.add(task.task_id)
                cancelled = self._cancelled
                if cancelled is None:
                    self._ready.append(seq)
                    self._changed.notify_all()
            if cancelled is not None:
                self._end(seq, not_run(task.task_id, Cancelled(cancelled)))

    # -- the workers' side ---------------------------------------------------------------------

    def next_job(self) -> Job | None:
        job = self._next_job(wait=True)
        return job if isinstance(job, Job) else None

    def poll_job(self) -> Job | Literal["not yet"] | None:
        """``next_job`` without waiting: ``NOT_YET`` when a job may come later (an event
        loop's dispatcher must not block)."""
        return self._next_job(wait=False)

    def _next_job(self, wait: bool) -> Job | Literal["not yet"] | None:
        """The next task to run, waiting while none is ready; None when the stream is done."""
        with self._changed:
            while not self.stop.is_set():
                if self._ready:
                    indices = self._take(self._tasks.__getitem__)
                    return Job(indices, [self._tasks[i] for i in indices])
                if self._exhausted and self._in_flight == 0:
                    return None
                if not wait:
                    return NOT_YET
                self._changed.wait()
            return None

    def finish(self, index: int, result: TaskResult) -> None:
        with self._changed:
            self._in_flight -= 1
        self._end(index, result)

    def _end(self, index: int, result: TaskResult) -> None:
        self.outlet.record(result)
        with self._changed:
            self._results[index] = result
            self._changed.notify_all()
        self.outlet.announce(result)

    def cancel(self, reason: str) -> None:
        """Every task not yet started, and every one still to come, ends as cancelled."""
        with self._changed:
            if self._cancelled is not None:
                return
            self._cancelled = reason
            doomed = list(self._ready)
            self._ready.clear()
        for i in doomed:
            self._end(i, not_run(self._tasks[i].task_id, Cancelled(reason)))

    @property
    def done(self) -> int:
        """Results handed back so far."""
        return self._head
