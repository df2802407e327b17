"""What every ``aita`` command shares: exit codes, option types and groups, the end-of-run
report, and the command line that resumes an interrupted run."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from aita.config import get_config
from aita.engine import BatchResult, TaskResult
from aita.pipelines.assignment import Assignment, find_assignment, load_assignment
from aita.pipelines.execution import RunOptions

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def add_verbose(parser: argparse.ArgumentParser, default: object = False) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log more detail"
    )


def run_options() -> argparse.ArgumentParser:
    """Options of every command that calls a model."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dry-run", action="store_true", help="use the built-in simulator: no key, no cost"
    )
    common.add_argument("--workers", type=positive_int, help="parallel calls (AITA_MAX_WORKERS)")
    common.add_argument(
        "--rate-limit", type=positive_float, help="requests per second (AITA_RATE_LIMIT_RPS)"
    )
    common.add_argument("--yes", action="store_true", help="do not ask before paid calls")
    add_verbose(common, default=argparse.SUPPRESS)
    return common


def assignment_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, parents=[run_options()])
    common.add_argument("--assignment", required=True, help="assignment folder name (or path)")
    common.add_argument("--data-dir", type=Path, help="where assignments live (AITA_DATA_DIR)")
    common.add_argument(
        "--no-resume", action="store_true", help="do not reuse results of earlier runs"
    )
    common.add_argument("--force", action="store_true", help="redo and overwrite every result")
    return common


def options_of(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        dry_run=args.dry_run,
        workers=args.workers,
        rate_limit=args.rate_limit,
        reuse=not (getattr(args, "force", False) or getattr(args, "no_resume", False)),
        yes=args.yes,
    )


def assignment_of(args: argparse.Namespace) -> Assignment:
    data_dir = args.data_dir or get_config().data_dir
    return load_assignment(find_assignment(args.assignment, data_dir))


def cost_text(known: float, unpriced: int, simulated: int = 0) -> str:
    """A cost that says what is not known: simulated calls cost nothing, unknown prices are
    not shown as $0."""
    if simulated and not unpriced and not known:
        return "$0 (simulated)"
    if not unpriced:
        return f"${known:.4f}"
    if not known:
        return "price unknown"
    return f"${known:.4f} + {unpriced} call(s) at an unknown price"


def report(batch: BatchResult | None, failed: list[TaskResult]) -> int:
    """The end-of-run lines every command prints; the exit code they imply."""
    if batch is not None:
        m = batch.metrics
        cost = cost_text(m.total_cost, m.unpriced_requests, m.simulated_requests)
        print(
            f"calls: {m.requests} ({m.total_retries} retries), tokens: {m.total_tokens}, "
            f"cost: {cost}, time: {m.wall_time:.1f}s"
        )
    for result in failed[:20]:
        print(f"failed {result.task_id}: {result.error}", file=sys.stderr)
    if len(failed) > 20:
        print(f"... and {len(failed) - 20} more failures", file=sys.stderr)
    if failed:
        print(f"{len(failed)} task(s) failed; the rest is saved. Run again to retry them.")
    return EXIT_FAILED if failed else EXIT_OK


def command_line() -> str:
    """The command as it was typed, to run again."""
    return "aita " + shlex.join(sys.argv[1:])
