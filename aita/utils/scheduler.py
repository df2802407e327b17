"""The shared state of one running batch: which task runs next, and what happens when one ends.

Tasks wait in ``ready`` (input order) once every dependency has succeeded. A finished task is
journalled first, then stored, then releases the tasks waiting for it; a failed one skips them
(and theirs) with the reason. ``cancel`` (fail-fast, a time limit) records everything not yet
started as cancelled; ``stop`` (Ctrl-C) just stops handing out work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aita.errors import AitaError, DependencyFailed
from aita.utils.checkpoint import CheckpointJournal, TaskRecord
from aita.utils.jsonio import dumps
from aita.utils.llm_tasks import BatchableLLMTask, LLMTask
from aita.utils.task_graph import TaskGraph
from aita.utils.task_results import TaskResult

log = logging.getLogger("aita.executor")


class Cancelled(AitaError):
    """A task that never started because its batch was cancelled (fail-fast or time limit)."""


class BatchScheduler:
    def __init__(
        self,
        tasks: list[LLMTask],
        graph: TaskGraph,
        results: list[TaskResult | None],
        journal: CheckpointJournal | None,
        progress: Any,
        on_task_complete: Callable[[TaskResult], object] | None,
        stop: threading.Event,
        fail_fast: bool = False,
    ) -> None:
        self.tasks = tasks
        self.graph = graph
        self.results = results
        self.journal = journal
        self.progress = progress
        self.on_task_complete = on_task_complete
        self.stop = stop
        self.fail_fast = fail_fast
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.waiting_on: dict[int, int] = {}
        self.solo: set[int] = set()  # batchable tasks to run alone from now on
        self.cancelled: str | None = None
        ready = []
        for i, result in enumerate(results):
            if result is not None:
                continue
            unmet = sum(not _succeeded(results[d]) for d in graph.requires.get(i, ()))
            if unmet:
                self.waiting_on[i] = unmet
            else:
                ready.append(i)
        self.ready = deque(ready)
        self.in_flight = 0
        self.requests = 0
        self.rate_limited = 0
        self.limiter_wait = 0.0
        self.succeeded = 0
        self.failed = 0
        self.retries = 0
        self.cost = 0.0
        self._postfix_at = 0.0

    @property
    def pending(self) -> int:
        return len(self.ready) + len(self.waiting_on)

    # -- handing out work ----------------------------------------------------------------------

    def next_index(self) -> int | None:
        """The next task to run, waiting while only blocked tasks are left; None when done."""
        with self.changed:
            while not self.stop.is_set():
                if self.ready:
                    self.in_flight += 1
                    return self.ready.popleft()
                if self.in_flight == 0:
                    return None  # nothing running could unblock what is left
                self.changed.wait()
            return None

    def take_batch_partners(self, index: int, limit: int) -> list[int]:
        """Up to ``limit`` ready tasks that can share a call with task ``index``."""
        first = self.tasks[index]
        if limit < 1 or not isinstance(first, BatchableLLMTask) or index in self.solo:
            return []
        partners: list[int] = []
        with self.changed:
            scan = min(len(self.ready), 4 * limit)  # bounded: no quadratic scans of huge queues
            for i in [self.ready[k] for k in range(scan)]:
                other = self.tasks[i]
                if (
                    isinstance(other, BatchableLLMTask)
                    and i not in self.solo
                    and first.can_batch_with(other)
                ):
                    partners.append(i)
                    if len(partners) == limit:
                        break
            for i in partners:
                self.ready.remove(i)
            self.in_flight += len(partners)
        return partners

    def run_alone(self, indices: list[int]) -> None:
        """Put tasks back to be retried on their own (missing from a combined answer)."""
        with self.changed:
            for i in indices:
                self.solo.add(i)
                self.in_flight -= 1
                self.ready.appendleft(i)
            self.changed.notify_all()

    def dependency_results(self, index: int) -> dict[str, Any]:
        with self.lock:
            return {
                self.tasks[d].task_id: result.result
                for d in self.graph.requires.get(index, ())
                if (result := self.results[d]) is not None
            }

    def count_attempt(self, waited: float, rate_limited: bool, retried: bool) -> None:
        with self.lock:
            self.requests += 1
            self.limiter_wait += waited
            self.rate_limited += rate_limited
            self.retries += retried

    # -- ending work ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        with self.changed:
            self.stop.set()
            self.changed.notify_all()

    def cancel(self, reason: str) -> None:
        """Record every task not yet started as cancelled; running ones finish normally."""
        with self.changed:
            if self.cancelled is not None:
                return
            self.cancelled = reason
            doomed = [*self.ready, *self.waiting_on]
            self.ready.clear()
            self.waiting_on.clear()
            ended = [(i, _ended(self.tasks[i], Cancelled(reason))) for i in sorted(doomed)]
            for i, item in ended:
                self._store(i, item)
            self.changed.notify_all()
        self._announce(ended)

    def finish(self, index: int, result: TaskResult) -> None:
        """Record a finished task, then release (or skip) the tasks that wait for it."""
        self._journal(result)
        ended = [(index, result)]
        with self.changed:
            self.in_flight -= 1
            if result.success:
                for d in self.graph.dependents.get(index, ()):
                    if d in self.waiting_on:
                        self.waiting_on[d] -= 1
                        if self.waiting_on[d] == 0:
                            del self.waiting_on[d]
                            self.ready.append(d)
            else:
                reason = DependencyFailed(f"skipped: dependency {result.task_id!r} did not succeed")
                for d in self.graph.descendants(index):
                    if self.waiting_on.pop(d, None) is not None:
                        ended.append((d, _ended(self.tasks[d], reason)))
            for i, item in ended:
                self._store(i, item)
            self.changed.notify_all()
        self._announce(ended[:1], journal=False)  # journalled above, before the release
        self._announce(ended[1:])
        if self.fail_fast and not result.success:
            self.cancel(f"cancelled: {result.task_id} failed and fail_fast is on")

    def _announce(self, ended: list[tuple[int, TaskResult]], journal: bool = True) -> None:
        for _, item in ended:
            if journal:
                self._journal(item)
            if self.on_task_complete is not None:
                try:
                    self.on_task_complete(item)
                except Exception:
                    log.exception("on_task_complete failed for task %s", item.task_id)

    def _journal(self, result: TaskResult) -> None:
        if self.journal is not None:
            self.journal.append(record_of(result))

    def _store(self, index: int, result: TaskResult) -> None:
        """Under the lock: the result, the counters and the progress bar."""
        self.results[index] = result
        if result.success:
            self.succeeded += 1
        else:
            self.failed += 1
        self.cost += result.cost
        if self.progress is not None:
            now = time.monotonic()
            if now - self._postfix_at > 0.25:
                self._postfix_at = now
                self.show_counts(refresh=False)
            self.progress.update(1)

    def show_counts(self, refresh: bool = True) -> None:
        if self.progress is not None:
            self.progress.set_postfix_str(
                f"ok={self.succeeded} failed={self.failed} retries={self.retries} "
                f"cost=${self.cost:.4f}",
                refresh=refresh,
            )


def _succeeded(result: TaskResult | None) -> bool:
    return result is not None and result.success


def _ended(task: LLMTask, error: AitaError) -> TaskResult:
    return TaskResult(
        task_id=task.task_id,
        success=False,
        error=str(error),
        error_type=type(error).__name__,
        exception=error,
    )


def record_of(result: TaskResult) -> TaskRecord:
    """What the checkpoint keeps; a fallback counts as failed, so a resume tries it again.

    A task answered inside a combined call has no response of its own: its result is kept
    instead, when it can be stored as JSON.
    """
    succeeded = result.success and not result.used_fallback
    value = None
    if succeeded and result.batched:
        try:
            dumps(result.result)
            value = result.result
        except TypeError:
            succeeded = False  # cannot be restored: run it again on resume
    return TaskRecord(
        task_id=result.task_id,
        succeeded=succeeded,
        raw_response=result.raw_response if succeeded else None,
        value=value,
        usage={
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.tokens,
            "cost": result.cost,
        },
        model=result.model,
        error=None if succeeded else result.error,
        error_type=None if succeeded else result.error_type,
        retry_count=result.retry_count,
        execution_time=result.execution_time,
    )
