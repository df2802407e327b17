"""Benchmark: ``--workers auto`` against a self-hosted server whose constraint is slots.

    python benchmarks/workers.py            # the simulator with 4 slots, and llama.cpp if installed
    python benchmarks/workers.py --smoke    # tiny sizes, to keep the script working

A self-hosted server (vLLM, llama.cpp's server with ``--parallel N``, Ollama) answers N
requests at once and queues the rest. Each scenario runs the same calls with fixed worker
counts and with ``max_workers="auto"`` and prints, written to ``benchmarks/results/
workers.json``: throughput (answers/s), its share of the best fixed count's, and the median
time a request spent in the server as a multiple of the unloaded one (the median of the run
with one worker; a separate run without the change of load for ``slots_sim_load``): the
simulator's own count of the time from a request's arrival to its answer, the wait for a slot
included (llama.cpp: the call's latency, from the client). Then which fixed counts met both
targets (at least 0.9 of the best throughput, at most 1.5 times the unloaded time): ``auto``
can do no better than the best of them.

Scenarios:
  slots_sim       the provider simulator with 4 slots of 0.2 s each (``concurrency=4``)
  slots_sim_load  the same, with its service time doubled half way through the run
  llama_parallel2 llama.cpp's ``llama-server --parallel 2`` (its default threads, one per
                  core) with SmolLM2-135M, 16 tokens an answer, if built (``.ci/run`` builds it; see
                  ``tests/support/llama_server.py``)
Nothing is asserted: the figures go into the README.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aita.engine import ParallelLLMExecutor, SimpleLLMTask, create_openrouter_client  # noqa: E402
from aita.files import write_json_atomic  # noqa: E402
from aita.simulator import ProviderSimulator, SimulatorConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "workers.json"


def run(
    base_url: str,
    tasks: int,
    workers: int | Literal["auto"],
    sim: ProviderSimulator | None = None,
    **params: Any,
) -> dict[str, Any]:
    """One batch; the latency is the simulator's time in the server when there is one (the
    wait for a slot included), else the call's as the client saw it."""
    if sim is not None:
        sim.reset_stats()
    client = create_openrouter_client(api_key="bench", base_url=base_url, timeout=120)
    executor = ParallelLLMExecutor(
        client, max_workers=workers, rate_limit=None, enable_checkpointing=False,
        show_progress=False, max_retries=3,
    )  # fmt: skip
    started = time.monotonic()
    result = executor.execute_batch(
        [SimpleLLMTask(f"t{i}", f"Say the number {i}.", **params) for i in range(tasks)]
    )
    wall = time.monotonic() - started
    client.close()
    latencies = (
        list(sim.stats.seconds_in_server)
        if sim is not None
        else [r.call_time for r in result.task_results if r.success]
    )
    limit = getattr(executor.concurrency, "limit", None)
    return {
        "workers": workers,
        "completed": result.metrics.completed_tasks,
        "throughput": round(result.metrics.completed_tasks / wall, 3),
        "median_latency": round(statistics.median(latencies), 4) if latencies else None,
        "final_limit": limit,
    }


def scenario(
    name: str,
    base_url: str,
    tasks: int,
    fixed: list[int],
    on_half: Any = None,
    sim: ProviderSimulator | None = None,
    **params: Any,
) -> dict[str, Any]:
    if sim is None:  # a real server's first answers are slow (loading, caches): not counted
        run(base_url, 8, 2, **params)
    unloaded = None
    if 1 not in fixed:
        unloaded = run(base_url, max(20, tasks // 5), 1, sim, **params)["median_latency"]
    rows = []
    for workers in [*fixed, "auto"]:
        timer = None
        if on_half is not None:
            on_half(False)
            timer = threading.Timer(on_half.half, on_half, args=(True,))
            timer.start()
        rows.append(run(base_url, tasks, workers, sim, **params))
        if timer is not None:
            timer.cancel()
    best = max(r["throughput"] for r in rows if r["workers"] != "auto")
    if unloaded is None:
        unloaded = next(r["median_latency"] for r in rows if r["workers"] == 1)
    for r in rows:
        r["share_of_best"] = round(r["throughput"] / best, 3)
        r["latency_vs_unloaded"] = (
            round(r["median_latency"] / unloaded, 2) if r["median_latency"] else None
        )
        print(
            f"{name:16} workers {r['workers']!s:>4}  {r['throughput']:7.2f}/s  "
            f"share {r['share_of_best']:.2f}  median {r['median_latency']}s "
            f"({r['latency_vs_unloaded']}x unloaded)"
            + (f"  limit at the end {r['final_limit']}" if r["workers"] == "auto" else ""),
            flush=True,
        )
    if on_half is not None:  # every count's answers take twice as long half way through
        return {"unloaded_latency": unloaded, "rows": rows}
    meeting = [r["workers"] for r in rows if r["workers"] != "auto" and on_target(r)]
    print(f"{name:16} fixed counts on both targets: {meeting or 'none'}; auto: "
          f"{'on both' if on_target(rows[-1]) else 'not'}", flush=True)  # fmt: skip
    return {"unloaded_latency": unloaded, "rows": rows, "fixed_on_target": meeting}


def on_target(row: dict[str, Any]) -> bool:
    """At least 0.9 of the best fixed count's throughput, at most 1.5 times the unloaded
    time in the server."""
    latency = row["latency_vs_unloaded"]
    return bool(row["share_of_best"] >= 0.9 and latency is not None and latency <= 1.5)


class SlowDown:
    """Doubles the simulator's service time (another client's load arrives) when called."""

    def __init__(self, sim: ProviderSimulator, base: float, half: float) -> None:
        self.sim, self.base, self.half = sim, base, half

    def __call__(self, slower: bool) -> None:
        self.sim.config.latency = self.base * (2 if slower else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--only", action="append", help="run scenarios whose name has this")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the figures")
    args = parser.parse_args(argv)
    # SmolLM2's answers are cut at 16 tokens on purpose (short, even calls): no warning each
    logging.getLogger("aita.executor").setLevel(logging.ERROR)
    tasks = 40 if args.smoke else 300
    wanted = lambda name: not args.only or any(w in name for w in args.only)  # noqa: E731
    report: dict[str, Any] = {"smoke": args.smoke}
    if wanted("slots_sim"):
        with ProviderSimulator(SimulatorConfig(latency=0.2, concurrency=4)) as sim:
            report["slots_sim"] = scenario(
                "slots_sim", sim.base_url, tasks, [1, 2, 4, 8, 16], sim=sim
            )
            if wanted("slots_sim_load"):
                slow = SlowDown(sim, 0.2, half=tasks / 20 / 2)
                report["slots_sim_load"] = scenario(
                    "slots_sim_load", sim.base_url, tasks, [4, 8, 16], on_half=slow, sim=sim
                )
    if wanted("llama_parallel2"):
        from tests.support.llama_server import missing_parallel, running_llama_server

        if problem := missing_parallel():
            print(f"skipped llama_parallel2: {problem}")
        else:
            scratch = tempfile.TemporaryDirectory()
            with scratch, running_llama_server(Path(scratch.name), parallel=2) as base_url:
                report["llama_parallel2"] = scenario(
                    "llama_parallel2", base_url, 12 if args.smoke else 240, [1, 2, 3, 4, 8],
                    max_tokens=16,
                )  # fmt: skip
    write_json_atomic(args.json, report)
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
