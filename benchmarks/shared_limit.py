"""Benchmark: three processes on one provider limit, each pacing itself vs sharing it in Redis.

    python benchmarks/shared_limit.py            # 200 tasks per process; about 90 s
    python benchmarks/shared_limit.py --smoke    # 20 tasks per process, to keep it working

Three ``aita`` processes (8 workers each, each configured at 20 requests/s) against one
simulator that allows 20 requests/s, 0.1 s per call: (a) each pacing itself locally, as three
processes on one API key do without a shared limit; (b) sharing one limit through Redis
(``RedisRateLimiter``, a real ``redis-server`` on loopback). Both run side by side in one run,
each against a fresh simulator. Printed, and written to ``benchmarks/results/shared_limit.json``:
the combined achieved rate (answers over the span from the first start to the last answer), that
as a share of the server's rate, and the share of requests answered 429.

The child processes and the Redis server are the tests' own
(``tests/support/shared_limit_runner.py``, ``tests/support/redis_server.py``), so the benchmark
measures exactly what the tests check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' runner and Redis server, run from any folder

from aita.files import write_json_atomic  # noqa: E402
from aita.simulator import ProviderSimulator, SimulatorConfig  # noqa: E402
from tests.support.redis_server import REDIS_SERVER, RedisServer  # noqa: E402
from tests.support.shared_limit_runner import RATE, WORKERS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "shared_limit.json"
SERVER_RATE = 20.0
LATENCY = 0.1
PROCESSES = 3


def run_mode(redis_url: str, tasks: int, folder: Path) -> dict[str, Any]:
    """Three processes against a fresh simulator; what they achieved together."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with ProviderSimulator(SimulatorConfig(rate_limit=SERVER_RATE, latency=LATENCY)) as sim:
        outs = [folder / f"{redis_url == 'local'}-{i}.json" for i in range(PROCESSES)]
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    *(
                        "-m",
                        "tests.support.shared_limit_runner",
                        sim.base_url,
                        redis_url,
                        str(tasks),
                    ),
                    *(f"p{i}-", str(out)),
                ],
                env=env,
                stderr=subprocess.PIPE,
            )
            for i, out in enumerate(outs)
        ]
        for process in processes:
            _, stderr = process.communicate()
            if process.returncode != 0:
                raise SystemExit(stderr.decode()[-2000:])
        reports = [json.loads(out.read_text()) for out in outs]
        requests, refused = sim.stats.requests, sim.stats.rate_limited
    answers = sum(r["own_answers"] for r in reports)
    span = max(r["finished"][-1] for r in reports) - min(r["first_start"] for r in reports)
    rate = answers / span
    return {
        "answers": answers,
        "tasks": PROCESSES * tasks,
        "span_s": round(span, 2),
        "combined_rate": round(rate, 2),
        "share_of_server_rate": round(rate / SERVER_RATE, 3),
        "requests": requests,
        "answered_429": refused,
        "share_429": round(refused / requests, 4) if requests else 0.0,
        "requests_per_task": round(requests / (PROCESSES * tasks), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks per process")
    parser.add_argument("--smoke", action="store_true", help="20 tasks per process")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the figures")
    args = parser.parse_args()
    if REDIS_SERVER is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    tasks = 20 if args.smoke else args.tasks
    print(
        f"{PROCESSES} processes x {tasks} tasks, {WORKERS} workers and {RATE:g} requests/s each; "
        f"the server allows {SERVER_RATE:g}/s, {LATENCY:g} s per call"
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        redis_server = RedisServer(folder / "redis")
        try:
            rows = {
                "a) each process paces itself": run_mode("local", tasks, folder),
                "b) one limit shared in Redis": run_mode(redis_server.url, tasks, folder),
            }
        finally:
            redis_server.stop()
    print(f"{'':32} {'req/s':>7} {'of server':>10} {'429s':>6} {'share 429':>10} {'req/task':>9}")
    for name, row in rows.items():
        print(
            f"{name:32} {row['combined_rate']:7.2f} {row['share_of_server_rate']:10.2f} "
            f"{row['answered_429']:6d} {row['share_429']:10.2%} {row['requests_per_task']:9.2f}"
        )
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processes": PROCESSES,
        "tasks_per_process": tasks,
        "client_rate": RATE,
        "server_rate": SERVER_RATE,
        "latency_s": LATENCY,
        "rows": rows,
    }
    write_json_atomic(args.json, report)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
