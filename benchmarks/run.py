"""Benchmarks: aita beside the usual alternatives, side by side in one run, on loopback.

    pip install -e '.[bench]'
    python benchmarks/run.py           # full size: a table, and benchmarks/results/latest.json
    python benchmarks/run.py --smoke   # tiny sizes, to keep the script working (CI)

Scenarios (every runner gets a fresh provider simulator with the same settings):
  a) latency-bound: 200 calls of 0.2 s, 10 workers, no limit (ideal 4.0 s)
  b) at the limit: server and client at 25 requests/s, 300 calls of 0.1 s (ideal 12 s)
  c) misconfigured: client set to 30/s, the server allows 15/s, 240 calls of 0.1 s (ideal 16 s)
  d) overhead: an in-process zero-latency client, 2,000 and 20,000 tasks, checkpoints on
  e) memory: peak RSS for 100,000 queued tasks, beyond the tasks themselves
  f) faults at the limit: 240 calls, server and client 20/s, 10% answered 500, 12 workers
  g) streaming memory: 1,000,000 tasks from a generator through execute_stream, checkpoints on
  h) the lean call path: 5,000 calls of 1 s, 500 in flight, and 10,000 with 5,000 in flight,
     against a minimal server, beside raw aiohttp and the openai SDK (``lean_path.py``)

d) runs twice: with a synchronous client (the thread pool, 8 workers) and with one that answers
on an event loop (``acomplete``, as the built-in client does: the loop driver, 100 in flight).

Alternatives on a-c: sequential calls; a ThreadPoolExecutor with the openai SDK's own retries;
langchain_core's InMemoryRateLimiter with the SDK; aiolimiter with AsyncOpenAI. Runners whose
package is missing are skipped (they are in the ``bench`` extra). "ideal" is the best any client
could do; efficiency is ideal / wall time, shown only for a runner that finished every task
("-" otherwise, in the table and in the JSON as null). Nothing is asserted: the figures go into
the README.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai

from aita.engine import (
    LLMMessage,
    LLMResponse,
    ParallelLLMExecutor,
    SimpleLLMTask,
    Usage,
    create_openrouter_client,
)
from aita.files import write_json_atomic
from aita.simulator import ProviderSimulator, SimulatorConfig

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
MODEL = "google/gemini-2.5-flash"
SDK_RETRIES = 8


@dataclass
class Scenario:
    key: str
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
    #: ideal / wall; None for a runner that lost tasks (finishing early by dropping work is
    #: not speed)
    efficiency: float | None
    succeeded: int
    failed: int
    rate_limited: int
    requests_per_task: float


Runner = Callable[[Scenario, str], int]  # returns the number of tasks with their own answer


def expected(i: int) -> str:
    return f"[sim] task {i}"


def run_aita(s: Scenario, base_url: str) -> int:
    client = create_openrouter_client(api_key="bench", base_url=base_url, timeout=30)
    executor = ParallelLLMExecutor(
        client,
        max_workers=s.workers,
        rate_limit=s.client_rate,
        enable_checkpointing=False,
        show_progress=False,
        max_retries=SDK_RETRIES,
    )
    result = executor.execute_batch([SimpleLLMTask(f"t{i}", f"task {i}") for i in range(s.tasks)])
    client.close()
    return sum(r.success and r.result == expected(i) for i, r in enumerate(result.task_results))


def _sdk_call(sdk: openai.OpenAI, i: int, before: Callable[[], object] | None = None) -> bool:
    if before is not None:
        before()
    try:
        response = sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"task {i}"}]
        )
    except openai.APIError:
        return False
    return response.choices[0].message.content == expected(i)


def run_sequential(s: Scenario, base_url: str) -> int:
    sdk = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=SDK_RETRIES, timeout=30)
    ok = sum(_sdk_call(sdk, i) for i in range(s.tasks))
    sdk.close()
    return ok


def run_thread_pool(s: Scenario, base_url: str) -> int:
    """What most scripts do: a thread pool and the SDK's own retries."""
    sdk = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=SDK_RETRIES, timeout=30)
    with ThreadPoolExecutor(max_workers=s.workers) as pool:
        ok = sum(pool.map(lambda i: _sdk_call(sdk, i), range(s.tasks)))
    sdk.close()
    return ok


def run_langchain_limiter(s: Scenario, base_url: str) -> int:
    from langchain_core.rate_limiters import InMemoryRateLimiter

    limiter = InMemoryRateLimiter(
        requests_per_second=s.client_rate or 1000.0, check_every_n_seconds=0.01, max_bucket_size=1
    )
    sdk = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=SDK_RETRIES, timeout=30)
    with ThreadPoolExecutor(max_workers=s.workers) as pool:
        ok = sum(pool.map(lambda i: _sdk_call(sdk, i, limiter.acquire), range(s.tasks)))
    sdk.close()
    return ok


def run_aiolimiter(s: Scenario, base_url: str) -> int:
    from aiolimiter import AsyncLimiter

    async def main() -> int:
        limiter = AsyncLimiter(s.client_rate or 1000.0, 1.0)
        gate = asyncio.Semaphore(s.workers)
        sdk = openai.AsyncOpenAI(
            api_key="bench", base_url=base_url, max_retries=SDK_RETRIES, timeout=30
        )

        async def call(i: int) -> bool:
            async with gate, limiter:
                try:
                    response = await sdk.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": f"task {i}"}]
                    )
                except openai.APIError:
                    return False
            return response.choices[0].message.content == expected(i)

        results = await asyncio.gather(*(call(i) for i in range(s.tasks)))
        await sdk.close()
        return sum(results)

    return asyncio.run(main())


RUNNERS: dict[str, Runner] = {
    "aita": run_aita,
    "sequential": run_sequential,
    "threadpool + SDK retries": run_thread_pool,
    "langchain InMemoryRateLimiter": run_langchain_limiter,
    "aiolimiter + AsyncOpenAI": run_aiolimiter,
}


def available(name: str) -> bool:
    module = {
        "langchain InMemoryRateLimiter": "langchain_core",
        "aiolimiter + AsyncOpenAI": "aiolimiter",
    }
    try:
        if name in module:
            __import__(module[name])
    except ImportError:
        return False
    return True


def scenarios(smoke: bool) -> list[Scenario]:
    k = 0.1 if smoke else 1.0
    a, b, c, f = int(200 * k), int(300 * k), int(240 * k), int(240 * k)
    return [
        Scenario("a", "a) latency-bound, 0.2 s calls, 10 workers", a, 10,
                 SimulatorConfig(latency=0.2), None, ideal=a * 0.2 / 10),
        Scenario("b", "b) at the limit, server and client 25/s", b, 10,
                 SimulatorConfig(rate_limit=25, latency=0.1), 25.0, ideal=b / 25),
        Scenario("c", "c) misconfigured, client 30/s, server 15/s", c, 10,
                 SimulatorConfig(rate_limit=15, latency=0.1), 30.0, ideal=c / 15),
        Scenario("f", "f) at the limit with 10% 500s, 20/s, 12 workers", f, 12,
                 SimulatorConfig(rate_limit=20, latency=0.05, error_rate=0.10), 20.0,
                 ideal=f / 20),
    ]  # fmt: skip


def efficiency_text(row: Row) -> str:
    """The efficiency as printed: "-" for a runner that did not finish every task."""
    return "-" if row.efficiency is None else f"{row.efficiency:.2f}"


def measure(scenario: Scenario, runner_name: str, runner: Runner) -> Row:
    with ProviderSimulator(scenario.server) as sim:
        started = time.perf_counter()
        ok = runner(scenario, sim.base_url)
        wall = time.perf_counter() - started
        return Row(
            scenario=scenario.name,
            runner=runner_name,
            wall=round(wall, 3),
            efficiency=round(scenario.ideal / wall, 3) if ok == scenario.tasks else None,
            succeeded=ok,
            failed=scenario.tasks - ok,
            rate_limited=sim.stats.rate_limited,
            requests_per_task=round(sim.stats.requests / scenario.tasks, 3),
        )


class InstantClient:
    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        return LLMResponse(content="ok", usage=Usage(1, 1, 2), model="local")


class AsyncInstantClient:
    async def acomplete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        return LLMResponse(content="ok", usage=Usage(1, 1, 2), model="local")


def overhead(count: int, on_loop: bool = False) -> dict[str, Any]:
    """d) tasks/s through the whole engine (limiter, retries, journal) with no network."""
    client: Any = AsyncInstantClient() if on_loop else InstantClient()
    with tempfile.TemporaryDirectory() as folder:
        executor = ParallelLLMExecutor(
            client, max_workers=100 if on_loop else 8, rate_limit=None, checkpoint_dir=folder,
            show_progress=False, enable_checkpointing=True, spend_ledger=f"{folder}/spend.jsonl",
        )  # fmt: skip
        tasks = [SimpleLLMTask(f"t{i}", f"p{i}") for i in range(count)]
        started, cpu = time.perf_counter(), time.process_time()
        executor.execute_batch(tasks)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "driver": "event loop" if on_loop else "thread pool",
        "tasks": count,
        "wall": round(wall, 3),
        "tasks_per_second": round(count / wall),
        # robust to other load on the machine: what one core would do
        "tasks_per_cpu_second": round(count / cpu),
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def memory_child(count: int) -> None:
    """e) run in a fresh process: peak RSS while the batch runs, beyond the built tasks."""
    tasks = [SimpleLLMTask(f"t{i}", f"p{i}") for i in range(count)]
    with_tasks = _rss_bytes()
    with tempfile.TemporaryDirectory() as folder:
        ParallelLLMExecutor(
            InstantClient(), max_workers=8, rate_limit=None, checkpoint_dir=folder,
            show_progress=False, spend_ledger=f"{folder}/spend.jsonl",
        ).execute_batch(tasks)  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(max(0, peak - with_tasks) / count)


def memory(count: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {"tasks": count, "bytes_per_task": round(float(done.stdout.strip()))}


def stream_memory_child(count: int) -> None:
    """g) run in a fresh process: peak RSS while ``count`` tasks from a generator go through
    ``execute_stream`` (journal on), beyond the process before the stream started."""
    with tempfile.TemporaryDirectory() as folder:
        executor = ParallelLLMExecutor(
            InstantClient(), max_workers=8, rate_limit=None, checkpoint_dir=folder,
            show_progress=False, spend_ledger=f"{folder}/spend.jsonl",
        )  # fmt: skip
        before = _rss_bytes()
        started = time.perf_counter()
        tasks = (SimpleLLMTask(f"t{i:07d}", f"p{i}") for i in range(count))
        done = sum(1 for _ in executor.execute_stream(tasks, checkpoint_name="memory"))
        wall = time.perf_counter() - started
    assert done == count
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{max(0, peak - before)} {wall}")


def stream_memory(count: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--stream-memory-child", str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    grown, wall = done.stdout.split()
    return {
        "tasks": count,
        "peak_growth_mb": round(int(grown) / 2**20, 1),
        "bytes_per_task": round(int(grown) / count, 1),
        "tasks_per_second": round(count / float(wall)),
    }


def simulator_round_trip(calls: int = 200) -> dict[str, Any]:
    """Checked first: the simulator must add no latency of its own (Nagle's algorithm with
    delayed ACKs would add ~40 ms to every small response). Median of sequential calls with
    zero simulated latency, through the SDK."""
    with ProviderSimulator(SimulatorConfig(latency=0.0)) as sim:
        sdk = openai.OpenAI(api_key="bench", base_url=sim.base_url, max_retries=0)
        times = []
        for i in range(calls):
            started = time.perf_counter()
            _sdk_call(sdk, i)
            times.append(time.perf_counter() - started)
        sdk.close()
    times.sort()
    return {"calls": calls, "median_ms": round(1000 * times[calls // 2], 2),
            "p95_ms": round(1000 * times[int(calls * 0.95)], 2)}  # fmt: skip


def warm_up() -> None:
    """Pay the openai SDK's lazy imports and first-connection costs before anything is timed,
    so whichever runner goes first is not charged for them."""
    warm = Scenario("w", "warm-up", 2, 2, SimulatorConfig(), None, ideal=1.0)
    with ProviderSimulator(warm.server) as sim:
        for name, runner in RUNNERS.items():
            if available(name):
                runner(warm, sim.base_url)


def _beside(name: str) -> Any:
    """A module of the benchmarks folder (this script may be loaded from anywhere)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument("--only", help="scenario letters to run, e.g. 'ab' (default: all)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stream-memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.stream_memory_child:
        stream_memory_child(args.stream_memory_child)
        return 0
    warm_up()
    round_trip = simulator_round_trip()
    print(
        f"simulator round trip at zero latency: median {round_trip['median_ms']} ms, "
        f"p95 {round_trip['p95_ms']} ms"
    )
    only = set(args.only or "abcdefgh")
    rows = []
    for scenario in (s for s in scenarios(args.smoke) if s.key in only):
        for name, runner in RUNNERS.items():
            if not available(name):
                print(f"skipped {name}: not installed (pip install -e '.[bench]')")
                continue
            rows.append(measure(scenario, name, runner))
            r = rows[-1]
            print(
                f"{r.scenario:<46} {r.runner:<30} {r.wall:>7.2f}s {efficiency_text(r):>5} "
                f"ok={r.succeeded:<4} failed={r.failed:<4} 429s={r.rate_limited:<5} "
                f"req/task={r.requests_per_task:.2f}",
                flush=True,
            )
    small, large = (200, 2000) if args.smoke else (2000, 20000)
    engine = []
    if "d" in only:
        overhead(small, on_loop=True)  # warm-up: first-use costs are not per-task overhead
        engine = [overhead(n, on_loop) for on_loop in (False, True) for n in (small, large)]
    for e in engine:
        print(
            f"d) overhead, {e['driver']}: {e['tasks']} tasks in {e['wall']}s = "
            f"{e['tasks_per_second']} tasks/s ({e['tasks_per_cpu_second']} per CPU-second)"
        )
    mem = memory(10_000 if args.smoke else 100_000) if "e" in only else {}
    if mem:
        print(f"e) memory: {mem['bytes_per_task']} bytes per queued task ({mem['tasks']} tasks)")
    streamed = stream_memory(10_000 if args.smoke else 1_000_000) if "g" in only else {}
    if streamed:
        print(
            f"g) stream memory: {streamed['bytes_per_task']} bytes per task "
            f"({streamed['tasks']} tasks, peak RSS +{streamed['peak_growth_mb']} MB, "
            f"{streamed['tasks_per_second']} tasks/s)"
        )
    lean_path = _beside("lean_path")
    lean = lean_path.scenario_h(args.smoke) if "h" in only else []
    for row in lean:
        print(lean_path.row_text(row), flush=True)
    write_json_atomic(
        args.json,
        {
            "smoke": args.smoke,
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "simulator_round_trip": round_trip,
            "rows": [asdict(r) for r in rows],
            "overhead": engine,
            "memory": mem,
            "stream_memory": streamed,
            "lean_path": lean,
        },
    )
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
