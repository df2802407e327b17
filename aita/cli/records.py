"""``aita checkpoints`` and ``aita costs``: what earlier runs recorded and what they spent.

Costs come from the spend ledger, not from checkpoints: cleaning checkpoints loses no spend.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from aita.cli._common import EXIT_FAILED, EXIT_OK, add_verbose, cost_text
from aita.config import get_config
from aita.engine import CheckpointManager, SpendEntry, SpendLedger
from aita.errors import AitaError
from aita.terminal import confirm

log = logging.getLogger("aita.cli")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    checkpoints = commands.add_parser("checkpoints", help="list, show or clean checkpoints")
    checkpoints.add_argument("action", choices=["list", "show", "clean"])
    checkpoints.add_argument("name", nargs="?", help="checkpoint name or file (show, clean)")
    checkpoints.add_argument("--checkpoint-dir", type=Path, help="default: AITA_CHECKPOINT_DIR")
    checkpoints.add_argument(
        "--keep", type=int, default=0, help="clean: keep the newest N per name"
    )
    checkpoints.add_argument("--yes", action="store_true", help="clean without asking")
    add_verbose(checkpoints, default=argparse.SUPPRESS)
    checkpoints.set_defaults(handler=_checkpoints)

    costs = commands.add_parser(
        "costs", help="what the paid calls cost, by operation, model and batch"
    )
    costs.add_argument("--ledger", type=Path, help="the spend ledger (AITA_SPEND_LEDGER)")
    add_verbose(costs, default=argparse.SUPPRESS)
    costs.set_defaults(handler=_costs)


def _manager(args: argparse.Namespace) -> CheckpointManager:
    return CheckpointManager(args.checkpoint_dir or get_config().parallel_execution.checkpoint_dir)


def _checkpoints(args: argparse.Namespace) -> int:
    manager = _manager(args)
    if args.action == "list":
        paths = manager.list_checkpoints(args.name)
        if not paths:
            print(f"no checkpoints in {manager.checkpoint_dir}")
        for path in paths:
            print(_checkpoint_line(manager, path))
        return EXIT_OK
    if args.action == "show":
        if not args.name:
            raise AitaError("checkpoints show needs a checkpoint name or file")
        given = Path(args.name)
        target = given if given.is_file() else manager.find_latest_checkpoint(args.name)
        if target is None:
            raise AitaError(f"no checkpoint named {args.name!r} in {manager.checkpoint_dir}")
        checkpoint = manager.load(target)
        print(_checkpoint_line(manager, target))
        for record in checkpoint.failed.values():
            print(f"  failed {record.task_id}: {record.error}")
        return EXIT_OK
    paths = manager.list_checkpoints(args.name)
    doomed = len(paths) - (args.keep if args.name else 0)
    if not paths or (args.name and doomed <= 0):
        print("nothing to clean")
        return EXIT_OK
    question = (
        f"delete {doomed if args.name else len(paths)} checkpoint(s) in {manager.checkpoint_dir}?"
    )
    if not args.yes and not confirm(question, when_not_a_terminal=False):
        print("nothing deleted (pass --yes to delete without a terminal)", file=sys.stderr)
        return EXIT_FAILED
    removed = manager.cleanup(args.name, keep_latest=args.keep)
    print(f"deleted {len(removed)} checkpoint(s)")
    return EXIT_OK


def _checkpoint_line(manager: CheckpointManager, path: Path) -> str:
    try:
        c = manager.load(path)
    except AitaError as error:
        return f"{path.name}: unreadable ({error})"
    cost = sum(t["cost"] for t in c.spent.values())
    return (
        f"{path.name}: {c.name}, {len(c.succeeded)} ok / {len(c.failed)} failed of "
        f"{c.total_tasks} tasks, ${cost:.4f}, created {c.created_at}"
    )


def _costs(args: argparse.Namespace) -> int:
    path = args.ledger or get_config().parallel_execution.spend_ledger
    if path is None:
        raise AitaError("no spend ledger: AITA_SPEND_LEDGER is set to none")
    ledger = SpendLedger(path)
    by_operation: dict[str, Spend] = {}
    by_model: dict[str, Spend] = {}
    by_batch: dict[str, Spend] = {}
    total = Spend()
    for entry in ledger.entries():
        for table, name in (
            (by_operation, entry.operation),
            (by_model, entry.model),
            (by_batch, entry.batch),
        ):
            table.setdefault(name, Spend()).add(entry)
        total.add(entry)
    if not total.calls:
        print(f"no paid calls recorded in {ledger.path}")
        return EXIT_OK
    print(f"spend ledger: {ledger.path}")
    for title, table in (("operation", by_operation), ("model", by_model), ("batch", by_batch)):
        print(f"by {title}:")
        for name, spend in sorted(table.items()):
            print(f"  {name:<40} {spend.describe()}")
    print(f"total: {total.describe()}")
    return EXIT_OK


@dataclass
class Spend:
    """What a group of ledger entries cost; calls at an unknown price are counted, not priced."""

    calls: int = 0
    cost: float = 0.0
    unpriced: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, entry: SpendEntry) -> None:
        self.calls += 1
        self.prompt_tokens += entry.prompt_tokens
        self.completion_tokens += entry.completion_tokens
        if entry.cost is None:
            self.unpriced += 1
        else:
            self.cost += entry.cost

    def describe(self) -> str:
        tokens = f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens"
        return f"{cost_text(self.cost, self.unpriced)} ({self.calls} calls; {tokens})"
