"""``aita checkpoints`` and ``aita costs``: what earlier runs recorded."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aita.cli._common import EXIT_OK, add_verbose
from aita.config import get_config
from aita.engine import CheckpointManager
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

    costs = commands.add_parser("costs", help="what the recorded calls cost, by batch and model")
    costs.add_argument("--checkpoint-dir", type=Path, help="default: AITA_CHECKPOINT_DIR")
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
    question = f"delete checkpoints in {manager.checkpoint_dir}?"
    if not args.yes and not confirm(question, when_not_a_terminal=True):
        print("nothing deleted")
        return EXIT_OK
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
    manager = _manager(args)
    by_batch: dict[str, float] = {}
    by_model: dict[str, list[float]] = {}
    by_operation: dict[str, float] = {}
    for path in manager.list_checkpoints():
        try:
            checkpoint = manager.load(path)
        except AitaError as error:
            log.warning("%s", error)
            continue
        operation = checkpoint.name.rsplit("__", 1)[-1] if "__" in checkpoint.name else "batch"
        for model, spent in checkpoint.spent.items():
            by_batch[checkpoint.name] = by_batch.get(checkpoint.name, 0.0) + spent["cost"]
            by_operation[operation] = by_operation.get(operation, 0.0) + spent["cost"]
            totals = by_model.setdefault(model, [0.0, 0.0, 0.0])
            totals[0] += spent["cost"]
            totals[1] += spent["prompt_tokens"]
            totals[2] += spent["completion_tokens"]
    if not by_batch:
        print(f"no recorded calls in {manager.checkpoint_dir}")
        return EXIT_OK
    print("by operation:")
    for name, cost in sorted(by_operation.items()):
        print(f"  {name:<40} ${cost:.4f}")
    print("by model:")
    for model, (cost, prompt, completion) in sorted(by_model.items()):
        print(
            f"  {model:<40} ${cost:.4f}  "
            f"({int(prompt)} prompt + {int(completion)} completion tokens)"
        )
    print("by batch:")
    for name, cost in sorted(by_batch.items()):
        print(f"  {name:<40} ${cost:.4f}")
    print(f"total: ${sum(by_batch.values()):.4f}")
    return EXIT_OK
