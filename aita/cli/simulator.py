"""``aita demo`` and ``aita simulate``: the engine and the provider simulator, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from aita.cli._options import quiet
from aita.cli._parsers import Commands, add_command, add_verbosity
from aita.cli._summary import EXIT_OK, info, report
from aita.cli._types import positive_float, positive_int, probability
from aita.engine import ParallelLLMExecutor, SimpleLLMTask, create_openrouter_client
from aita.simulator import ProviderSimulator, SimulatorConfig


def register(commands: Commands) -> None:
    demo = add_command(
        commands,
        "demo",
        help="a batch against the built-in provider simulator (offline, no key)",
        description="The engine alone: a batch of tasks against the built-in provider "
        "simulator, with its metrics. No key, no cost. (No --model: the simulator answers "
        "every model alike and its calls are never priced.)",
        examples=[
            "aita demo",
            "aita demo --tasks 500 --workers 20 --server-rate-limit 50 --error-rate 0.05",
        ],
    )
    demo.add_argument("--tasks", type=positive_int, default=200, help="number of tasks")
    demo.add_argument("--workers", type=positive_int, default=10, help="calls in flight")
    demo.add_argument(
        "--rate-limit", type=positive_float, help="client requests/s (default: unlimited)"
    )
    demo.add_argument(
        "--checkpoint-dir", type=Path, default=Path("checkpoints"), help="where checkpoints go"
    )
    demo.add_argument("--no-resume", action="store_true", help="ignore an earlier checkpoint")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar (as -q)")
    _simulator_options(demo)
    add_verbosity(demo, default=argparse.SUPPRESS)
    demo.set_defaults(handler=_demo)

    simulate = add_command(
        commands,
        "simulate",
        help="serve the provider simulator on 127.0.0.1 until Ctrl-C",
        description="Serve the OpenAI-compatible provider simulator on 127.0.0.1 until Ctrl-C, "
        "for your own experiments.",
        examples=[
            "aita simulate --port 8765 --latency 0.2 --server-rate-limit 20",
            "AITA_BASE_URL=http://127.0.0.1:8765/v1 OPENROUTER_API_KEY=x aita demo",
        ],
    )
    simulate.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1")
    _simulator_options(simulate)
    add_verbosity(simulate, default=argparse.SUPPRESS)
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
            show_progress=not (args.no_progress or quiet(args)),
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
        # Calls the server spent its latency on (a 429 is answered at once): what sequential
        # calls would have waited for.
        served = sim.stats.requests - sim.stats.rate_limited
    m = result.metrics
    print(
        f"wall time: {m.wall_time:.2f}s  throughput: {m.throughput:.1f} tasks/s  "
        f"p50/p95 latency: {m.p50_latency:.3f}/{m.p95_latency:.3f}s"
    )
    # A speedup only for a run that did all its work: finishing early by losing tasks is not
    # speed, and with nothing called there is nothing to compare.
    if not m.failed_tasks and served and args.latency > 0 and m.wall_time > 0:
        print(f"speedup over sequential calls: {served * args.latency / m.wall_time:.1f}x")
    if result.checkpoint_path:
        info(f"checkpoint: {result.checkpoint_path}")
    return report(result)


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
