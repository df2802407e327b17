"""The end of a run: the exit codes, the informational lines ``-q`` silences, and the lines that
say how a run's tasks ended, what the calls cost and which tasks have no answer."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence

from aita.engine import BatchResult, ExecutionMetrics, Tally, TaskResult, outcome_of
from aita.terminal import printable

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Lines that tell what a command did besides its results ("written to ...", calls and cost);
#: ``-q`` silences them. The handler is installed by ``aita.cli.main``.
info_log = logging.getLogger("aita.cli.info")


def info(text: str) -> None:
    info_log.info(text)


def cost_text(known: float, unpriced: int, simulated: int = 0) -> str:
    """A cost that says what is not known: simulated calls cost nothing, unknown prices are
    not shown as $0."""
    if simulated and not unpriced and not known:
        return "$0 (simulated)"
    if not unpriced and not known:
        return "$0"
    if not unpriced:
        return f"${known:.4f}"
    if not known:
        return "price unknown"
    return f"${known:.4f} + {unpriced} call(s) at an unknown price"


def calls_line(metrics: Sequence[ExecutionMetrics]) -> str:
    """``calls: 19 (0 retries), tokens: 5746, cost: $0.0012, time: 0.4s`` over some batches."""
    cost = cost_text(
        sum(m.total_cost for m in metrics),
        sum(m.unpriced_requests for m in metrics),
        sum(m.simulated_requests for m in metrics),
    )
    return (
        f"calls: {sum(m.requests for m in metrics)} "
        f"({sum(m.total_retries for m in metrics)} retries), "
        f"tokens: {sum(m.total_tokens for m in metrics)}, cost: {cost}, "
        f"time: {sum(m.wall_time for m in metrics):.1f}s"
    )


def tally_of(batches: Iterable[BatchResult | None], reused: int = 0) -> Tally:
    """How the tasks of a run ended; ``reused`` counts tasks answered by earlier results that
    never entered a batch."""
    tally = Tally(outcome_of(r) for b in batches if b is not None for r in b.task_results)
    tally["reused"] += reused
    return tally


def report(
    batches: BatchResult | Sequence[BatchResult | None] | None,
    *,
    reused: int = 0,
    noun: str = "tasks",
) -> int:
    """The end-of-run lines every command prints: how its tasks ended (results), the calls and
    their cost (information), the tasks without an answer (errors, on stderr); and the exit
    code they imply."""
    ran = [b for b in (batches if isinstance(batches, Sequence) else [batches]) if b is not None]
    tally = tally_of(ran, reused)
    print(tally.describe(noun))
    if ran:
        info(calls_line([b.metrics for b in ran]))
    unfinished = [
        (outcome, r)
        for b in ran
        for r in b.task_results
        if (outcome := outcome_of(r)) in ("failed", "skipped", "cancelled")
    ]
    for outcome, result in unfinished[:20]:
        print(f"{outcome} {printable(result.task_id)}: {reason_of(result)}", file=sys.stderr)
        _show_unparsed(result)
    if len(unfinished) > 20:
        print(f"... and {len(unfinished) - 20} more", file=sys.stderr)
    if unfinished:
        print(f"{len(unfinished)} {noun} not done; the rest is saved. Run again to retry them.")
    # A fallback is a placeholder, not an answer: the run did not do what was asked of it.
    stand_ins = sum(r.used_fallback for b in ran for r in b.task_results)
    if _verbose():
        for result in [r for b in ran for r in b.task_results if r.used_fallback][:20]:
            print(f"fallback {printable(result.task_id)}: {reason_of(result)}", file=sys.stderr)
            _show_unparsed(result)
    if stand_ins:
        print(
            f"{stand_ins} {noun} got no usable answer and a fallback stands in, flagged for "
            "review; run again to ask the model again"
        )
    return EXIT_FAILED if unfinished or stand_ins else EXIT_OK


def reason_of(result: TaskResult) -> str:
    """Why a task has no answer, fit to print (the outcome word itself left out)."""
    error = printable(result.error or "no reason given")
    for word in ("skipped: ", "cancelled: "):
        error = error.removeprefix(word)
    return error


#: How much of an answer that failed to parse ``-v`` shows.
SHOWN_ANSWER = 2000


def _verbose() -> bool:
    return info_log.isEnabledFor(logging.DEBUG)


def _show_unparsed(result: TaskResult) -> None:
    """With ``-v``, the answer a task could not parse: what the model said, to see why."""
    if not _verbose() or result.error_type != "ResponseParseError" or not result.raw_response:
        return
    answer = result.raw_response
    cut = (
        f" ... ({len(answer) - SHOWN_ANSWER} more characters)" if len(answer) > SHOWN_ANSWER else ""
    )
    print(
        f"  the answer that did not parse: {printable(answer[:SHOWN_ANSWER])}{cut}", file=sys.stderr
    )
