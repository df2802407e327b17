"""The command line that resumes an interrupted run: as typed, less what would start it over."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Collection

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
