"""``aita cache stats|clear``: the response cache (``AITA_CACHE_PATH``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from aita.cli._parsers import Commands, add_command, add_verbosity
from aita.cli._summary import EXIT_OK, info
from aita.config import get_config
from aita.engine import ResponseCache
from aita.terminal import confirm


def register(commands: Commands) -> None:
    cache = add_command(
        commands,
        "cache",
        help="how full the response cache is, or empty it",
        description="The response cache (on with --cache or AITA_CACHE=true): entries, size, "
        "hits and misses; or empty it.",
        examples=["aita cache stats", "aita cache clear --yes"],
    )
    cache.add_argument("action", choices=["stats", "clear"])
    cache.add_argument(
        "--cache-path",
        type=Path,
        help="default: AITA_CACHE_PATH, ~/.cache/aita/responses.sqlite3",
    )
    cache.add_argument("--yes", action="store_true", help="clear without asking")
    add_verbosity(cache, default=argparse.SUPPRESS)
    cache.set_defaults(handler=_cache)


def _cache(args: argparse.Namespace) -> int:
    path = (args.cache_path or get_config().parallel_execution.cache_path).expanduser()
    if not path.exists():  # nothing to show or clear, and nothing to create
        print(f"no response cache at {path}")
        return EXIT_OK
    with ResponseCache(path) as cache:
        stats = cache.stats()
        if args.action == "stats":
            print(
                f"{path}: {stats['entries']} cached response(s), {_size(stats['bytes'])}, "
                f"{stats['hits']} hits / {stats['misses']} misses"
            )
            return EXIT_OK
        question = f"delete the {stats['entries']} cached responses in {path}?"
        if not args.yes and not confirm(question, when_not_a_terminal=False):
            info("nothing deleted (--yes clears without asking)")
            return EXIT_OK
        print(f"deleted {cache.clear()} cached response(s)")
    return EXIT_OK


def _size(count: int) -> str:
    size, unit = float(count), "bytes"
    for bigger in ("KB", "MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
