"""One vocabulary for how a task ended, used by every line aita prints about tasks.

- **done**: answered, and the answer was used as it came.
- **flagged**: done, but flagged for review: the task's fallback stood in after every retry
  failed, or the answer was cut off at the token limit. A fallback is tried again next run.
- **failed**: no usable answer; run again to retry it.
- **skipped**: never run, because a task it needs did not succeed.
- **cancelled**: never run, because the run was stopped (fail-fast, a timeout, an outage, a
  refused key).
- **reused**: answered by an earlier run (its checkpoint or result files) or the response
  cache, with no call now.

``outcome_of`` classifies a ``TaskResult`` (what a run returns), ``outcome_of_record`` a
``TaskRecord`` (what a checkpoint journal keeps), so a command's end-of-run line and
``aita checkpoints list|show`` count the same run the same way.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from aita.engine._journal import TaskRecord
from aita.engine._results import TaskResult

Outcome = Literal["done", "flagged", "failed", "skipped", "cancelled", "reused"]
#: The order outcomes are listed in.
OUTCOMES: tuple[Outcome, ...] = ("done", "flagged", "reused", "failed", "skipped", "cancelled")


def outcome_of(result: TaskResult) -> Outcome:
    """How a task of this run ended, a done task answered by an earlier run being ``reused``."""
    if result.outcome == "done" and result.source != "call":
        return "reused"
    return result.outcome


def outcome_of_record(record: TaskRecord) -> Outcome:
    """A journal record's outcome. The journal keeps a fallback as not succeeded (so a resume
    tries it again); a record that says it was a fallback is flagged, not failed."""
    if record.used_fallback:
        return "flagged"
    if record.succeeded:
        return "flagged" if record.finish_reason == "length" else "done"
    return _not_done(record.error_type)


def _not_done(error_type: str | None) -> Outcome:
    if error_type == "DependencyFailed":
        return "skipped"
    if error_type == "Cancelled":
        return "cancelled"
    return "failed"


class Tally(Counter[Outcome]):
    """How many tasks ended each way."""

    @property
    def unfinished(self) -> int:
        """Tasks with no usable answer: failed, skipped or cancelled."""
        return self["failed"] + self["skipped"] + self["cancelled"]

    def describe(self, noun: str = "tasks") -> str:
        """``19 tasks: 10 done, 9 flagged, 0 failed``: done and failed always, the rest when
        there are any."""
        parts = [f"{self[o]} {o}" for o in OUTCOMES if self[o] or o in ("done", "failed")]
        return f"{self.total()} {noun}: {', '.join(parts)}"
