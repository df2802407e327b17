"""Benchmarks: aita beside a plain thread pool on the openai SDK, in one run, on loopback.

    python benchmarks/run.py          # full size: a table, and benchmarks/results/latest.json
    python benchmarks/run.py --smoke  # tiny sizes, to keep the script working in CI

Every runner gets a fresh provider simulator with the same settings. "ideal" is the best any
client could do: the task count over the server's rate, or the latency-bound time on N workers.
Efficiency is ideal / actual. Nothing here is asserted; the figures go into the README.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import openai

from aita.services.llm.openrouter import create_openrouter_client
from aita.simulator import ProviderSimulator, SimulatorConfig
from aita.utils.jsonio import write_json_atomic
from aita.utils.llm_tasks import SimpleLLMTask
from aita.utils.parallel_executor import ParallelLLMExecutor

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass
class Scenario:
    name: str
    tasks: int
    workers: int
    server: SimulatorConfig
    client_rate: float | None
    ideal: float


@dataclass
class Row:
    scenario: str
    runner: str
    wall: float
    efficiency: float
    succeeded: int
    failed: int
    rate_limited: int
    requests_per_task: float


Runner = Callable[[Scenario, str], tuple[int, int]]


def run_aita(scenario: Scenario, base_url: str) -> tuple[int, int]:
    client = create_openrouter_client(api_key="bench", base_url=base_url, timeout=30)
    executor = ParallelLLMExecutor(
        client,
        max_workers=scenario.workers,
        rate_limit=scenario.client_rate,
        enable_checkpointing=False,
        show_progress=False,
        max_retries=8,
    )
    tasks = [SimpleLLMTask(f"t{i}", f"task {i}") for i in range(scenario.tasks)]
    result = executor.execute_batch(tasks)
    ok = sum(r.success and r.result == f"[sim] task {i}" for i, r in enumerate(result.task_results))
    client.close()
    return ok, scenario.tasks - ok


def run_thread_pool(scenario: Scenario, base_url: str) -> tuple[int, int]:
    """What most scripts do: a ThreadPoolExecutor and the SDK's own retries (8, like aita's)."""
    sdk = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=8, timeout=30)

    def call(i: int) -> bool:
        try:
            response = sdk.chat.completions.create(
                model="google/gemini-2.5-flash",
                messages=[{"role": "user", "content": f"task {i}"}],
            )
        except openai.APIError:
            return False
        return response.choices[0].message.content == f"[sim] task {i}"

    with ThreadPoolExecutor(max_workers=scenario.workers) as pool:
        ok = sum(pool.map(call, range(scenario.tasks)))
    sdk.close()
    return ok, scenario.tasks - ok


RUNNERS: dict[str, Runner] = {"aita": run_aita, "threadpool+sdk-retries": run_thread_pool}


def scenarios(smoke: bool) -> list[Scenario]:
    scale = 0.1 if smoke else 1.0
    n_limit, n_latency = int(240 * scale), int(200 * scale)
    return [
        Scenario(
            "at the limit, 10% 500s (20/s server, 20/s client, 12 workers)",
            n_limit,
            12,
            SimulatorConfig(rate_limit=20, latency=0.05, error_rate=0.10),
            20.0,
            ideal=n_limit / 20,
        ),
        Scenario(
            "latency-bound (0.2 s calls, 10 workers, no limit)",
            n_latency,
            10,
            SimulatorConfig(latency=0.2),
            None,
            ideal=n_latency * 0.2 / 10,
        ),
    ]


def measure(scenario: Scenario, runner_name: str, runner: Runner) -> Row:
    with ProviderSimulator(scenario.server) as sim:
        started = time.perf_counter()
        ok, failed = runner(scenario, sim.base_url)
        wall = time.perf_counter() - started
        return Row(
            scenario=scenario.name,
            runner=runner_name,
            wall=round(wall, 3),
            efficiency=round(scenario.ideal / wall, 3),
            succeeded=ok,
            failed=failed,
            rate_limited=sim.stats.rate_limited,
            requests_per_task=round(sim.stats.requests / scenario.tasks, 3),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args(argv)
    rows = [
        measure(scenario, name, runner)
        for scenario in scenarios(args.smoke)
        for name, runner in RUNNERS.items()
    ]
    header = (
        f"{'scenario':<62} {'runner':<24} {'wall s':>7} {'eff.':>5} {'ok':>4} {'fail':>4} "
        f"{'429s':>5} {'req/task':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.scenario:<62} {r.runner:<24} {r.wall:>7.2f} {r.efficiency:>5.2f} {r.succeeded:>4} "
            f"{r.failed:>4} {r.rate_limited:>5} {r.requests_per_task:>8.2f}"
        )
    write_json_atomic(
        args.json,
        {
            "smoke": args.smoke,
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "rows": [asdict(r) for r in rows],
        },
    )
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
