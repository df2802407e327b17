"""A batch's progress bar and the counters behind it, updated by every worker.

The bar shows done/total, elapsed < remaining, and ok/failed/retries/cost; tqdm draws it at most
five times a second, so a fast batch does not spend its time drawing, and the counts are set
with every task, so the ones drawn always match the number done beside them (a hidden bar's
only when it closes).
"""

from __future__ import annotations

import threading

from tqdm.auto import tqdm

from aita.engine._results import AttemptCounts, TaskResult

_BAR_FORMAT = (
    "{desc} {bar} {percentage:3.0f}% | {n_fmt}/{total_fmt} | {elapsed} < {remaining}{postfix}"
)
_STREAM_FORMAT = "{desc} | {n_fmt} tasks | {elapsed} | {rate_fmt}{postfix}"


class BatchProgress:
    def __init__(self, total: int | None, done: int, show: bool) -> None:
        """``total`` None: a stream of unknown length."""
        self.counts = AttemptCounts()
        self.succeeded = 0
        self.failed = 0
        self.cost = 0.0
        self._lock = threading.Lock()
        self._bar = tqdm(
            total=total,
            initial=done,
            desc=f"🚀 Executing {total} tasks" if total is not None else "🚀 Executing a stream",
            unit="task",
            disable=not show,
            dynamic_ncols=True,
            mininterval=0.2,
            bar_format=_BAR_FORMAT if total is not None else _STREAM_FORMAT,
        )

    def attempt(self, waited: float, rate_limited: bool, retried: bool) -> None:
        """One call was made after ``waited`` seconds at the limiter."""
        with self._lock:
            self.counts.requests += 1
            self.counts.limiter_wait += waited
            self.counts.rate_limited += rate_limited
            self.counts.retries += retried

    def answered(self, priced: bool, simulated: bool) -> None:
        """An answered call: one at an unknown price, or one of the simulator, is counted."""
        with self._lock:
            self.counts.simulated += simulated
            self.counts.unpriced += not priced and not simulated

    def cached(self) -> None:
        with self._lock:
            self.counts.cached += 1

    def truncated(self) -> None:
        with self._lock:
            self.counts.truncated += 1

    def stood(self, standing: str) -> None:
        """How a task stood against the journal when it came up (see ``Checkpoint.answer_for``)."""
        with self._lock:
            setattr(self.counts, standing, getattr(self.counts, standing) + 1)

    def task_done(self, result: TaskResult) -> None:
        with self._lock:
            if result.success:
                self.succeeded += 1
            else:
                self.failed += 1
            self.cost += result.cost
            if not self._bar.disable:  # set, not drawn: the next draw shows it with n
                self._show_counts(refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        with self._lock:
            self._show_counts(refresh=True)
            self._bar.close()

    def _show_counts(self, refresh: bool) -> None:
        counts = self.counts
        looked_back = counts.reused or counts.changed or counts.rerun
        standing = (
            f" reused={counts.reused} changed={counts.changed} new={counts.new}"
            if looked_back
            else ""
        )
        simulated = counts.simulated and not self.cost and not counts.unpriced
        cost = "$0 (simulated)" if simulated else f"${self.cost:.4f}"
        self._bar.set_postfix_str(
            f"ok={self.succeeded} failed={self.failed}{standing} retries={counts.retries} "
            f"cost={cost}",
            refresh=refresh,
        )
