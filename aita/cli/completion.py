"""``aita completion bash|zsh|tcsh``: a shell completion script, generated from the parser.

shtab writes a static script from the argparse parser: nothing of aita runs when the user
presses Tab, so completion is instant and cannot break, and the script always matches the
commands and options of the installed version. shtab is imported only here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aita.cli._parsers import Commands, add_command
from aita.cli._summary import EXIT_OK

SHELLS = ("bash", "zsh", "tcsh")
#: options whose value is a folder (the rest typed ``Path`` are files)
FOLDER_OPTIONS = frozenset({"data_dir", "output_dir", "checkpoint_dir"})


def register(commands: Commands) -> None:
    completion = add_command(
        commands,
        "completion",
        help="print a shell completion script",
        description="Print a completion script for your shell; source it from your shell's "
        "start-up file.",
        examples=[
            "aita completion bash > ~/.local/share/bash-completion/completions/aita",
            "aita completion zsh > ~/.zfunc/_aita   # with fpath+=~/.zfunc in ~/.zshrc",
        ],
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(handler=_completion)


def _completion(args: argparse.Namespace) -> int:
    import shtab

    from aita.cli import build_parser

    parser = build_parser()
    for action in _actions(parser):
        if action.type is Path:
            folder = action.dest in FOLDER_OPTIONS
            action.complete = shtab.DIRECTORY if folder else shtab.FILE  # type: ignore[attr-defined]
    print(shtab.complete(parser, shell=args.shell), end="")
    return EXIT_OK


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(_actions(sub))
    return found
