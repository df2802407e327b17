"""The ``aita`` command line: one module per group of commands, each registering its own.

Exit codes: 0 all done, 1 some tasks failed (the rest saved), 2 bad input, 130 interrupted
(finished work saved; the same command resumes).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aita.cli import assignment, batch, cache, records, report, simulator, workflows
from aita.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_verbose,
    command_line,
)
from aita.errors import AitaError
from aita.pipelines.execution import Declined

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aita", description="Parallel LLM batches and teaching-assistant pipelines."
    )
    add_verbose(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (assignment, report, workflows, batch, records, cache, simulator):
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except Declined as declined:
        print(f"aita: {declined}", file=sys.stderr)
        return EXIT_FAILED
    except AitaError as error:
        print(f"aita: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interrupted:
        detail = f": {interrupted}" if str(interrupted) else ""
        print(f"\naita: interrupted{detail}", file=sys.stderr)
        print(f"finished work is saved; resume with: {command_line()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into a pager or head that closed early
        sys.stderr.close()
        return EXIT_OK
    except Exception as error:
        if args.verbose:
            raise
        print(
            f"aita: internal error: {type(error).__name__}: {error} (run with -v for details)",
            file=sys.stderr,
        )
        return EXIT_FAILED
