"""The ``aita`` command line: one module per group of commands, each registering its own.

Exit codes: 0 all done, 1 some tasks failed (the rest saved), 2 bad input, 130 interrupted
(finished work saved; the same command resumes).

Output: results on stdout, errors on stderr. Informational lines (``aita.cli.info``: files
written, calls and cost) and ``aita run``'s step lines (``aita.run``) go through ``logging``, so
``-q`` leaves only results and errors and ``-v`` adds the library's own log.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence

import aita
from aita.cli import (
    assignment,
    batch,
    cache,
    completion,
    records,
    report,
    simulator,
    teacher,
    workflows,
)
from aita.cli._parsers import HelpFormatter, add_verbosity
from aita.cli._resume import resume_line
from aita.cli._summary import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from aita.errors import (
    AitaError,
    BatchOverdue,
    ProviderUnavailable,
    RateLimited,
    RunFailed,
)
from aita.pipelines.execution import Declined
from aita.terminal import printable

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aita",
        description="Parallel LLM batches and teaching-assistant pipelines.",
        epilog="Run 'aita COMMAND --help' for a command's options and examples.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aita {aita.__version__}")
    add_verbosity(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (
        assignment,
        report,
        teacher,
        workflows,
        batch,
        records,
        cache,
        simulator,
        completion,
    ):
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_output(verbose=bool(args.verbose), quiet=bool(args.quiet))
    # What is loaded by now lives as long as the process: out of the collector's reach, so no
    # full collection of it lands among a run's first requests (a 0.1 s stall, a late start
    # that a strict rate limit makes up for by nothing).
    gc.freeze()
    try:
        return int(args.handler(args))
    except Declined as declined:
        print(f"aita: {printable(declined)}", file=sys.stderr)
        return EXIT_FAILED
    except (RunFailed, ProviderUnavailable, RateLimited, BatchOverdue) as error:
        # not the input's fault: a file failed the run, or the provider is down or refusing
        print(f"aita: {printable(error)}", file=sys.stderr)
        return EXIT_FAILED
    except AitaError as error:
        print(f"aita: {printable(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interrupted:
        # The engine's BatchInterrupted tells a Python caller which checkpoint_name resumes;
        # here the command that resumes is what to say.
        path = getattr(interrupted, "checkpoint_path", None)
        saved = f"finished work is saved in {printable(path)}" if path else "finished work is saved"
        print("\naita: interrupted", file=sys.stderr)
        print(f"{saved}; resume with: {resume_line(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into a pager or head that closed early
        sys.stderr.close()
        return EXIT_OK
    except Exception as error:
        if args.verbose:
            raise
        print(
            f"aita: internal error: {type(error).__name__}: {printable(error)} "
            "(run with -v for details)",
            file=sys.stderr,
        )
        return EXIT_FAILED


class _Console(logging.Handler):
    """Writes records to the current ``sys.stdout`` or ``sys.stderr`` (looked up at each
    record, not at set-up, so redirected streams are honoured), each as one line with no
    control characters: step names, errors and file names come from outside."""

    def __init__(self, stream: str, fmt: str) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(logging.Formatter(fmt))

    def emit(self, record: logging.LogRecord) -> None:
        stream = getattr(sys, self.stream)
        try:
            stream.write(printable(self.format(record)) + "\n")
            stream.flush()
        except BrokenPipeError:
            raise
        except Exception:
            self.handleError(record)


def configure_output(*, verbose: bool, quiet: bool) -> None:
    """Levels and handlers for one run of the command (idempotent: ``main`` may run often in
    one process)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # the library's own log: errors only with -q, else as the root logger says
    library = logging.ERROR if quiet else logging.INFO if verbose else logging.NOTSET
    logging.getLogger("aita").setLevel(library)
    for name, stream, fmt in (
        ("aita.cli.info", "stdout", "%(message)s"),
        ("aita.run", "stderr", "[%(levelname)s] %(message)s"),
    ):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, _Console)]:
            logger.removeHandler(handler)
        logger.addHandler(_Console(stream, fmt))
        logger.propagate = False
        logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
