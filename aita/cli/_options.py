"""From parsed arguments to what a run needs: its options, its assignment, its client, and
output paths checked before anything is paid for."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aita.config import get_config
from aita.engine import OpenAICompatibleClient
from aita.errors import AitaError
from aita.files import private_folder
from aita.pipelines.assignment import Assignment, find_assignment, load_assignment
from aita.pipelines.dry_run import dry_run_responder
from aita.pipelines.execution import RunOptions
from aita.provider import open_client


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
        private_folder(folder)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise AitaError(f"{folder}: cannot write to the {what} ({reason.lower()})") from None


@contextmanager
def client_of(options: RunOptions) -> Iterator[OpenAICompatibleClient]:
    """The run's client: the configured provider, or for ``--dry-run`` the simulator answering
    as the pipelines expect."""
    with open_client(
        dry_run=options.dry_run, model=options.model, responder=dry_run_responder
    ) as client:
        yield client
