"""Option groups and the house help format: the options every model-calling command takes, and
those of the commands that work on an assignment."""

from __future__ import annotations

import argparse
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aita.cli._types import positive_float, workers_count


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
        type=workers_count,
        metavar="N",
        help="calls in flight at once, or 'auto': as many as a self-hosted server answers "
        "without queueing, found as it runs (default: AITA_MAX_WORKERS, 5); thousands are "
        "fine: the built-in client's calls share one event loop",
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


def results_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that read an assignment's results and call no model (report,
    override, review, export)."""
    parser.add_argument("--assignment", required=True, help="assignment folder name (or path)")
    parser.add_argument(
        "--data-dir", type=Path, help="where assignments live (default: AITA_DATA_DIR, ./data)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="the dry run's simulated results (results/dry-run/); without it, the real "
        "results, or the dry run's when there are no real grades yet",
    )
    add_verbosity(parser, default=argparse.SUPPRESS)
