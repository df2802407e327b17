"""The one yes/no question aita asks, and only where someone can answer it."""

from __future__ import annotations

import sys
from typing import TextIO


def confirm(
    question: str,
    *,
    when_not_a_terminal: bool,
    stdin: TextIO | None = None,
    stderr: TextIO | None = None,
) -> bool:
    """Ask ``question [y/N]`` on a terminal; anything but y/yes is no.

    When stdin is not a terminal nobody can answer, so nothing is asked (a script never hangs)
    and ``when_not_a_terminal`` is the answer: True where going on is safe, False where the
    question guards something that cannot be undone.
    """
    stdin = stdin or sys.stdin
    stderr = stderr or sys.stderr
    if not stdin.isatty():
        return when_not_a_terminal
    print(f"{question} [y/N] ", end="", file=stderr, flush=True)
    return stdin.readline().strip().lower() in {"y", "yes"}
