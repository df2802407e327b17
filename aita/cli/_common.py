"""What every ``aita`` command shares: exit codes, option types and groups, help formatting,
the end-of-run report, output that is safe to print, and the command line that resumes an
interrupted run."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aita.config import get_config
from aita.engine import BatchResult, ExecutionMetrics, Tally, TaskResult, outcome_of
from aita.errors import AitaError
from aita.pipelines.assignment import Assignment, find_assignment, load_assignment
from aita.pipelines.execution import RunOptions
from aita.terminal import printable

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Lines that tell what a command did besides its results ("written to ...", calls and cost);
#: ``-q`` silences them. The handler is installed by ``aita.cli.main``.
info_log = logging.getLogger("aita.cli.info")


def info(text: str) -> None:
    info_log.info(text)


# -- text from outside ---------------------------------------------------------------------

# -- option types --------------------------------------------------------------------------


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
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


# -- parsers -------------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and example epilogs keep their lines; an option with a default value shows
    it (options whose default comes from a setting name the setting in their help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or default in (None, False, "")
            or default is argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: %(default)s)"


if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    Commands = argparse._SubParsersAction


def add_command(
    commands: Commands,
    name: str,
    *,
    help: str,
    description: str | None = None,
    examples: Sequence[str] = (),
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """A sub-command with the house help format and its examples as the epilog."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else None
    text = description or help[0].upper() + help[1:] + "."
    return commands.add_parser(
        name,
        help=help,
        description=textwrap.fill(text, width=min(shutil.get_terminal_size().columns, 100) - 2),
        epilog=epilog,
        parents=list(parents),
        formatter_class=HelpFormatter,
    )


def add_verbosity(parser: argparse.ArgumentParser, default: object = False) -> None:
    """``-v`` (more detail) and ``-q`` (only results and errors). On sub-commands the default
    is ``SUPPRESS``, so ``aita -q grade`` and ``aita grade -q`` both work."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log more detail"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no progress bars or informational lines: only results and errors",
    )


def run_options() -> argparse.ArgumentParser:
    """Options of every command that calls a model."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dry-run", action="store_true", help="use the built-in simulator: no key, no cost"
    )
    common.add_argument(
        "--model",
        metavar="NAME",
        help="the model to call, e.g. openai/gpt-4o-mini (default: AITA_MODEL, "
        "google/gemini-2.5-flash)",
    )
    common.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="parallel calls (default: AITA_MAX_WORKERS, 5)",
    )
    common.add_argument(
        "--rate-limit",
        type=positive_float,
        metavar="RPS",
        help="requests per second (default: AITA_RATE_LIMIT_RPS, 10)",
    )
    common.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="answer a request asked before from the response cache, with no call "
        "(default: AITA_CACHE, off)",
    )
    common.add_argument("--yes", action="store_true", help="do not ask before paid calls")
    add_verbosity(common, default=argparse.SUPPRESS)
    return common


def assignment_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, parents=[run_options()])
    common.add_argument(
        "--assignment", required=True, metavar="NAME", help="assignment folder name (or path)"
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where assignments live (default: AITA_DATA_DIR, ./data)",
    )
    common.add_argument(
        "--no-resume", action="store_true", help="do not reuse results of earlier runs"
    )
    common.add_argument("--force", action="store_true", help="redo and overwrite every result")
    return common


def quiet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "quiet", False))


def options_of(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        dry_run=args.dry_run,
        workers=args.workers,
        rate_limit=args.rate_limit,
        reuse=not (getattr(args, "force", False) or getattr(args, "no_resume", False)),
        yes=args.yes,
        show_progress=False if quiet(args) else None,
        model=args.model,
        cache=args.cache,
        quiet=quiet(args),
    )


def assignment_of(args: argparse.Namespace) -> Assignment:
    data_dir = args.data_dir or get_config().data_dir
    return load_assignment(find_assignment(args.assignment, data_dir))


# -- output files, checked before anything is paid for -----------------------------------


def check_output_file(path: Path, what: str = "output") -> None:
    """Raise ``AitaError`` (exit 2) unless ``path`` can be written: its folder exists or can be
    made and takes a new file, and the path itself is not a folder."""
    if path.is_dir():
        raise AitaError(f"{path}: the {what} is a folder, not a file")
    check_output_dir(path.parent, what=f"folder of the {what}")
    if path.exists() and not os.access(path, os.W_OK):
        raise AitaError(f"{path}: cannot write the {what} (permission denied)")


def check_output_dir(folder: Path, what: str = "output folder") -> None:
    """Raise ``AitaError`` (exit 2) unless ``folder`` exists or can be made, and takes files."""
    if folder.exists() and not folder.is_dir():
        raise AitaError(f"{folder}: the {what} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise AitaError(f"{folder}: cannot write to the {what} ({reason.lower()})") from None


# -- the end of a run ----------------------------------------------------------------------


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
    if len(unfinished) > 20:
        print(f"... and {len(unfinished) - 20} more", file=sys.stderr)
    if unfinished:
        print(f"{len(unfinished)} {noun} not done; the rest is saved. Run again to retry them.")
    # A fallback is a placeholder, not an answer: the run did not do what was asked of it.
    stand_ins = sum(r.used_fallback for b in ran for r in b.task_results)
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


#: Options that start a command over: the line that resumes it leaves them out.
START_OVER_OPTIONS = ("--force", "--no-resume")


def command_line(leave_out: Collection[str] = ()) -> str:
    """The command as it was typed, to run again, without the options in ``leave_out`` (as typed
    or abbreviated, as argparse lets them be; ``--`` ends the options)."""
    words = sys.argv[1:]
    kept = []
    for n, word in enumerate(words):
        if word == "--":
            kept.extend(words[n:])
            break
        if len(word) > 2 and any(option.startswith(word) for option in leave_out):
            continue
        kept.append(word)
    return "aita " + shlex.join(kept)


def resume_line(args: argparse.Namespace) -> str:
    """The command that continues an interrupted one: as typed, less the options that would
    start it over (``--force``, ``--no-resume``) and so redo the work already saved."""
    given = [o for o in START_OVER_OPTIONS if getattr(args, o.lstrip("-").replace("-", "_"), False)]
    return command_line(given)
