"""``aita checkpoints`` and ``aita costs``: what earlier runs recorded and what they spent.

Costs come from the spend ledger, not from checkpoints: cleaning checkpoints loses no spend.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from aita.cli._parsers import Commands, add_command, add_verbosity
from aita.cli._summary import EXIT_FAILED, EXIT_OK, cost_text
from aita.config import get_config
from aita.engine import (
    Checkpoint,
    CheckpointManager,
    SpendEntry,
    SpendLedger,
    Tally,
    TaskRecord,
    Usage,
    cost_of,
    outcome_of_record,
)
from aita.errors import AitaError
from aita.terminal import confirm, printable


def register(commands: Commands) -> None:
    checkpoints = add_command(
        commands,
        "checkpoints",
        help="list, show or clean checkpoints",
        description="The checkpoint journals of earlier runs: how their tasks ended (done, "
        "flagged, failed, skipped, cancelled), what they cost; or delete them. Cleaning never "
        "touches the spend ledger.",
        examples=[
            "aita checkpoints list",
            "aita checkpoints show midterm__generate-rubric   # --dry-run's: midterm__dry-run__...",
            "aita checkpoints clean --keep 1 midterm__grade",
            "aita checkpoints clean --yes",
        ],
    )
    checkpoints.add_argument("action", choices=["list", "show", "clean"])
    checkpoints.add_argument("name", nargs="?", help="checkpoint name or file (show, clean)")
    checkpoints.add_argument(
        "--checkpoint-dir", type=Path, help="default: AITA_CHECKPOINT_DIR, ./checkpoints"
    )
    checkpoints.add_argument(
        "--keep", type=int, default=0, help="clean: keep the newest N per name"
    )
    checkpoints.add_argument("--yes", action="store_true", help="clean without asking")
    add_verbosity(checkpoints, default=argparse.SUPPRESS)
    checkpoints.set_defaults(handler=_checkpoints)

    costs = add_command(
        commands,
        "costs",
        help="what the paid calls cost, by operation, model and batch",
        description="What the paid calls cost, by operation, model and batch, from the spend "
        "ledger. Calls at a price nobody knows are counted, never shown as $0.",
        examples=["aita costs", "aita costs --ledger team-spend.jsonl"],
    )
    costs.add_argument("--ledger", type=Path, help="the spend ledger (default: AITA_SPEND_LEDGER)")
    add_verbosity(costs, default=argparse.SUPPRESS)
    costs.set_defaults(handler=_costs)


def _manager(args: argparse.Namespace) -> CheckpointManager:
    return CheckpointManager(args.checkpoint_dir or get_config().parallel_execution.checkpoint_dir)


def _where(manager: CheckpointManager) -> str:
    """The folder looked in, in full: a relative one is the current folder's, and runs started
    elsewhere wrote theirs there."""
    folder = manager.checkpoint_dir
    where = printable(folder.resolve())
    if folder.is_absolute():
        return where
    return (
        f"{where} (runs keep them in ./{printable(folder)} of the folder they ran in: run this "
        "there, or pass --checkpoint-dir)"
    )


def _checkpoints(args: argparse.Namespace) -> int:
    manager = _manager(args)
    if args.action == "list":
        paths = manager.list_checkpoints(args.name)
        if not paths:
            print(f"no checkpoints in {_where(manager)}")
        for path in paths:
            print(_checkpoint_line(manager, path))
        return EXIT_OK
    if args.action == "show":
        if not args.name:
            raise AitaError("checkpoints show needs a checkpoint name or file")
        given = Path(args.name)
        target = given if given.is_file() else manager.find_latest_checkpoint(args.name)
        if target is None:
            raise AitaError(f"no checkpoint named {args.name!r} in {_where(manager)}")
        checkpoint = manager.load(target)
        print(_checkpoint_line(manager, target))
        for record in checkpoint.records.values():
            outcome = outcome_of_record(record)
            if outcome != "done":
                print(f"  {outcome} {printable(record.task_id)}: {_reason(record)}")
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
        return f"{printable(path.name)}: unreadable ({printable(error)})"
    tally = Tally(outcome_of_record(r) for r in c.records.values())
    return (
        f"{printable(path.name)}: {printable(c.name)}, {tally.describe()}, "
        f"cost {_checkpoint_cost(c)}, created {printable(c.created_at)}"
    )


def _checkpoint_cost(c: Checkpoint) -> str:
    """What the calls this journal records cost (superseded records included: they were paid
    for); calls at an unknown price are counted as such, never as $0."""
    simulated_models = {r.model for r in c.records.values() if r.simulated}
    known, unpriced, simulated = 0.0, 0, 0
    for model, spent in c.spent.items():
        calls = int(spent["records"])
        if model in simulated_models:
            simulated += calls
        elif spent["cost"] > 0 or _priced(model):
            known += spent["cost"]
        else:
            unpriced += calls
    return cost_text(known, unpriced, simulated)


def _priced(model: str) -> bool:
    """Whether anyone knows ``model``'s price (if so, a recorded $0 was reported as free)."""
    return cost_of(model, Usage(prompt_tokens=1, completion_tokens=1)) is not None


def _reason(record: TaskRecord) -> str:
    if record.succeeded and record.finish_reason == "length":
        return "the answer was cut off at the token limit"
    error = printable(record.error or "no reason recorded")
    for word in ("skipped: ", "cancelled: "):
        error = error.removeprefix(word)
    return error


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
            (by_model, entry.model or "(model not reported)"),
            (by_batch, entry.batch),
        ):
            table.setdefault(name, Spend()).add(entry)
        total.add(entry)
    if not total.calls and not total.cached:
        print(f"no paid calls recorded in {ledger.path}")
        return EXIT_OK
    print(f"spend ledger: {ledger.path}")
    for title, table in (("operation", by_operation), ("model", by_model), ("batch", by_batch)):
        print(f"by {title}:")
        for name, spend in sorted(table.items()):
            print(f"  {printable(name):<40} {spend.describe()}")
    print(f"total: {total.describe()}")
    return EXIT_OK


@dataclass
class Spend:
    """What a group of ledger entries cost; calls at an unknown price are counted, not priced,
    and answers from the response cache are no calls."""

    calls: int = 0
    cached: int = 0
    cost: float = 0.0
    unpriced: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, entry: SpendEntry) -> None:
        if entry.cached:
            self.cached += 1
            return
        self.calls += 1
        self.prompt_tokens += entry.prompt_tokens
        self.completion_tokens += entry.completion_tokens
        if entry.cost is None:
            self.unpriced += 1
        else:
            self.cost += entry.cost

    def describe(self) -> str:
        tokens = f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens"
        cached = f", {self.cached} answered from the cache" if self.cached else ""
        cost = cost_text(self.cost, self.unpriced) if self.calls else "$0"
        return f"{cost} ({self.calls} calls{cached}; {tokens})"
