"""The users' guide's speed-up tables: its two workloads, one call at a time and in parallel.

    python benchmarks/guide.py           # writes benchmarks/results/guide.json, prints the tables
    python benchmarks/guide.py --smoke   # tiny latency, to keep the script working (tests)

Each workload runs through aita against a fresh provider simulator on loopback whose every call
takes ``LATENCY`` seconds (a stand-in for a model's answer time; the simulator adds none of its
own), with no rate limit on either side: sequential is aita with one worker, then 5 and 10
workers. The speed-up is sequential wall time over parallel wall time, measured side by side in
one run. A real provider's latency and rate limit decide real figures: calls that wait on the
model, as these do, gain about as many times as there are workers, until a rate limit binds.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aita.engine import ParallelLLMExecutor, SimpleLLMTask, create_openrouter_client
from aita.files import write_json_atomic
from aita.simulator import ProviderSimulator, SimulatorConfig

RESULTS = Path(__file__).resolve().parent / "results" / "guide.json"
#: seconds per simulated call
LATENCY = 1.0
#: (the guide's table, its workload, how many calls)
WORKLOADS = [("Rubric Generation", "questions", 20), ("Transcription", "pages", 100)]
WORKERS = [1, 5, 10]


def run(calls: int, workers: int, latency: float) -> float:
    """Wall seconds for ``calls`` calls through aita with ``workers`` workers."""
    with ProviderSimulator(SimulatorConfig(latency=latency)) as sim:
        client = create_openrouter_client(api_key="bench", base_url=sim.base_url)
        tasks = [SimpleLLMTask(f"t{i}", f"item {i}") for i in range(calls)]
        with tempfile.TemporaryDirectory() as folder:
            executor = ParallelLLMExecutor(
                client,
                max_workers=workers,
                rate_limit=None,
                checkpoint_dir=folder,
                show_progress=False,
            )
            started = time.perf_counter()
            result = executor.execute_batch(tasks)
            wall = time.perf_counter() - started
        client.close()
    if result.metrics.failed_tasks:
        raise SystemExit(f"{result.metrics.failed_tasks} calls failed: no figure")
    return wall


def measure(latency: float) -> dict[str, Any]:
    tables = []
    for title, unit, calls in WORKLOADS:
        walls = {workers: run(calls, workers, latency) for workers in WORKERS}
        rows = [
            {
                "configuration": "Sequential" if w == 1 else f"Parallel ({w} workers)",
                "seconds": round(walls[w], 1),
                "speedup": round(walls[1] / walls[w], 1),
            }
            for w in WORKERS
        ]
        tables.append({"title": f"{title} ({calls} {unit})", "calls": calls, "rows": rows})
    return {
        "latency": latency,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "tables": tables,
    }


def markdown(report: dict[str, Any]) -> str:
    """The tables as the guide shows them."""
    parts = []
    for table in report["tables"]:
        lines = [f"### {table['title']}", "", "| Configuration | Time | Speedup |"]
        lines.append("|---------------|------|---------|")
        for row in table["rows"]:
            lines.append(f"| {row['configuration']} | {row['seconds']:.1f}s | {row['speedup']}x |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="0.02 s calls (tests)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args(argv)
    report = measure(0.02 if args.smoke else LATENCY)
    write_json_atomic(args.json, report)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
