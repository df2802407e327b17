"""The ``aita`` command line.

Exit codes: 0 all done, 1 some tasks failed (the rest saved), 2 bad input, 130 interrupted
(checkpoint saved).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence

from aita.errors import AitaError
from aita.services.llm.openrouter import create_openrouter_client
from aita.simulator import ProviderSimulator, SimulatorConfig
from aita.utils.llm_tasks import SimpleLLMTask
from aita.utils.parallel_executor import BatchInterrupted, BatchResult, ParallelLLMExecutor

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _simulator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-rate-limit",
        type=_positive_float,
        default=None,
        help="requests/s the simulated provider allows (default: unlimited)",
    )
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per response")
    parser.add_argument(
        "--error-rate",
        type=_probability,
        default=0.0,
        help="share of requests answered with HTTP 500",
    )


def _simulator_config(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        rate_limit=args.server_rate_limit, latency=args.latency, error_rate=args.error_rate
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aita", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run a batch against the built-in provider simulator (offline, no key)"
    )
    demo.add_argument("--tasks", type=int, default=200, help="number of tasks")
    demo.add_argument("--workers", type=int, default=10)
    demo.add_argument(
        "--rate-limit",
        type=_positive_float,
        default=None,
        help="client requests/s (default: unlimited)",
    )
    demo.add_argument("--checkpoint-dir", default="checkpoints")
    demo.add_argument("--no-resume", action="store_true", help="ignore an earlier checkpoint")
    demo.add_argument("--no-progress", action="store_true")
    _simulator_options(demo)

    simulate = commands.add_parser(
        "simulate", help="serve the provider simulator on 127.0.0.1 until Ctrl-C"
    )
    simulate.add_argument("--port", type=int, default=8765)
    _simulator_options(simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo":
            return _demo(args)
        return _simulate(args)
    except AitaError as error:
        print(f"aita: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _demo(args: argparse.Namespace) -> int:
    if args.tasks < 1 or args.workers < 1:
        print("aita: --tasks and --workers must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    with ProviderSimulator(_simulator_config(args)) as sim:
        client = create_openrouter_client(api_key="simulator", base_url=sim.base_url, timeout=30)
        executor = ParallelLLMExecutor(
            client,
            max_workers=args.workers,
            rate_limit=args.rate_limit,
            checkpoint_dir=args.checkpoint_dir,
            show_progress=not args.no_progress,
            max_retries=5,
        )
        tasks = [
            SimpleLLMTask(f"demo_{i:05d}", f"Explain concept {i} in one sentence.")
            for i in range(args.tasks)
        ]
        try:
            result = executor.execute_batch(
                tasks,
                checkpoint_name=f"demo_{args.tasks}",
                resume_from_checkpoint=not args.no_resume,
            )
        except BatchInterrupted as interrupted:
            print(f"\naita: {interrupted}", file=sys.stderr)
            print(f"resume with: aita {shlex.join(sys.argv[1:])}", file=sys.stderr)
            return EXIT_INTERRUPTED
        client.close()
    _print_summary(result, args.latency)
    return EXIT_OK if not result.failed_results else EXIT_FAILED


def _print_summary(result: BatchResult, latency: float) -> None:
    m = result.metrics
    print(
        f"tasks: {m.completed_tasks}/{m.total_tasks} succeeded, {m.failed_tasks} failed, "
        f"{m.resumed_tasks} resumed from checkpoint"
    )
    print(
        f"wall time: {m.wall_time:.2f}s  throughput: {m.throughput:.1f} tasks/s  "
        f"p50/p95 latency: {m.p50_latency:.3f}/{m.p95_latency:.3f}s"
    )
    print(f"requests: {m.requests}  retries: {m.total_retries}  429s: {m.rate_limited_responses}")
    print(f"tokens: {m.total_tokens}  cost: ${m.total_cost:.4f}")
    if m.requests and latency > 0:
        sequential = m.requests * latency
        print(f"speedup over sequential calls: {sequential / m.wall_time:.1f}x")
    if result.checkpoint_path:
        print(f"checkpoint: {result.checkpoint_path}")
    for failed in result.failed_results[:10]:
        print(f"failed {failed.task_id}: {failed.error}", file=sys.stderr)


def _simulate(args: argparse.Namespace) -> int:
    sim = ProviderSimulator(_simulator_config(args), port=args.port)
    print(f"provider simulator on {sim.base_url} (Ctrl-C stops)", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        sim.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
