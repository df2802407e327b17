"""``aita demo`` and ``aita simulate``: the engine and the provider simulator, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from aita.cli._common import (
    EXIT_OK,
    add_verbose,
    positive_float,
    positive_int,
    probability,
    report,
)
from aita.engine import ParallelLLMExecutor, SimpleLLMTask, create_openrouter_client
from aita.simulator import ProviderSimulator, SimulatorConfig


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="a batch against the built-in provider simulator (offline, no key)"
    )
    demo.add_argument("--tasks", type=positive_int, default=200, help="number of tasks")
    demo.add_argument("--workers", type=positive_int, default=10)
    demo.add_argument(
        "--rate-limit", type=positive_float, help="client requests/s (default: unlimited)"
    )
    demo.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"))
    demo.add_argument("--no-resume", action="store_true", help="ignore an earlier checkpoint")
    demo.add_argument("--no-progress", action="store_true")
    _simulator_options(demo)
    add_verbose(demo, default=argparse.SUPPRESS)
    demo.set_defaults(handler=_demo)

    simulate = commands.add_parser(
        "simulate", help="serve the provider simulator on 127.0.0.1 until Ctrl-C"
    )
    simulate.add_argument("--port", type=int, default=8765)
    _simulator_options(simulate)
    add_verbose(simulate, default=argparse.SUPPRESS)
    simulate.set_defaults(handler=_simulate)


def _simulator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-rate-limit",
        type=positive_float,
        default=None,
        help="requests/s the simulated provider allows (default: unlimited)",
    )
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per response")
    parser.add_argument(
        "--error-rate", type=probability, default=0.0, help="share of requests answered with 500"
    )


def _simulator_config(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        rate_limit=args.server_rate_limit, latency=args.latency, error_rate=args.error_rate
    )


def _demo(args: argparse.Namespace) -> int:
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
        result = executor.execute_batch(
            tasks, checkpoint_name=f"demo_{args.tasks}", resume_from_checkpoint=not args.no_resume
        )
        client.close()
    m = result.metrics
    print(
        f"tasks: {m.completed_tasks}/{m.total_tasks} succeeded, {m.failed_tasks} failed, "
        f"{m.resumed_tasks} resumed from checkpoint"
    )
    print(
        f"wall time: {m.wall_time:.2f}s  throughput: {m.throughput:.1f} tasks/s  "
        f"p50/p95 latency: {m.p50_latency:.3f}/{m.p95_latency:.3f}s"
    )
    if m.requests and args.latency > 0:
        print(f"speedup over sequential calls: {m.requests * args.latency / m.wall_time:.1f}x")
    if result.checkpoint_path:
        print(f"checkpoint: {result.checkpoint_path}")
    return report(result, result.failed_results)


def _simulate(args: argparse.Namespace) -> int:
    sim = ProviderSimulator(_simulator_config(args), port=args.port)
    print(f"provider simulator on {sim.base_url} (Ctrl-C stops)", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        sim.stop()
    return EXIT_OK
