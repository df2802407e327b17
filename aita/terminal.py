"""What aita shows on a terminal and asks there: text from outside made safe to print, and the
one yes/no question, asked only where someone can answer it."""

from __future__ import annotations

import re
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


_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS, PM, APC, SOS strings
    r"|\x1b[@-Z\\-_]?"  # any other escape
)
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\u2028\u2029\x85]+")
#: C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a reader sees
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``text`` (from a provider, a model, a file or a file name) fit for one terminal line:
    escape sequences removed, line breaks and tabs made spaces, other control characters
    dropped. Everything the CLI prints that came from outside goes through here."""
    line = str(text)
    if line.isprintable():  # no control, escape, line break or format character: as it is
        return line
    cleaned = _ESCAPE_SEQUENCE.sub("", line)
    cleaned = _LINE_BREAKS.sub(" ", cleaned)
    return _CONTROLS.sub("", cleaned)
