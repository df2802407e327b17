"""Benchmark: three processes on one provider limit, each pacing itself vs sharing it in Redis.

    python benchmarks/shared_limit.py            # 200 tasks per process; about 90 s
    python benchmarks/shared_limit.py --smoke    # 20 tasks per process, to keep it working

Three ``aita`` processes (8 workers each, each configured at 20 requests/s) against one
simulator that allows 20 requests/s, 0.1 s per call: (a) each pacing itself locally, as three
processes on one API key do without a shared limit; (b) sharing one limit through Redis
(``RedisRateLimiter``, a real ``redis-server`` on loopback); (c, d) sharing it against a server
that allows 20 in any sliding second, or in each whole second; (e) as (c), with one of the
three killed 3 s in: the rate of the other two from 3 s after the kill, and how long until
every second held 18 answers again. Both run side by side in one run,
each against a fresh simulator. Printed, and written to ``benchmarks/results/shared_limit.json``:
the combined achieved rate (answers over the span from the first start to the last answer), that
as a share of the server's rate, and the share of requests answered 429.

The child processes and the Redis server are the tests' own
(``tests/support/shared_limit_runner.py``, ``tests/support/redis_server.py``), so the benchmark
measures exactly what the tests check.
"""

from __future__ import annotations

import argparse
import bisect
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


def run_mode(
    redis_url: str,
    tasks: int,
    folder: Path,
    enforcement: str = "bucket",
    kill_after: float | None = None,
) -> dict[str, Any]:
    """Three processes against a fresh simulator enforcing its limit as ``enforcement``; what
    they achieved together. ``kill_after``: the last process is killed (SIGKILL) that many
    seconds after it started, and the row says how fast the other two took its share."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    config = SimulatorConfig(rate_limit=SERVER_RATE, latency=LATENCY, enforcement=enforcement)
    with ProviderSimulator(config) as sim:
        tag = f"{redis_url == 'local'}-{enforcement}-{kill_after}"
        outs = [folder / f"{tag}-{i}.json" for i in range(PROCESSES)]
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
        killed_at = None
        if kill_after is not None:
            victim = Path(str(outs[-1]) + ".started")
            while not victim.exists():
                time.sleep(0.01)
            time.sleep(kill_after)
            processes[-1].kill()
            killed_at = time.time()
        for process in processes[: -1 if kill_after is not None else None]:
            _, stderr = process.communicate()
            if process.returncode != 0:
                raise SystemExit(stderr.decode()[-2000:])
        if kill_after is not None:
            processes[-1].communicate()
            outs = outs[:-1]
        reports = [json.loads(out.read_text()) for out in outs]
        requests, refused = sim.stats.requests, sim.stats.rate_limited
    answers = sum(r["own_answers"] for r in reports)
    span = max(r["finished"][-1] for r in reports) - min(r["first_start"] for r in reports)
    rate = answers / span
    row = {
        "enforcement": enforcement,
        "answers": answers,
        "span_s": round(span, 2),
        "combined_rate": round(rate, 2),
        "share_of_server_rate": round(rate / SERVER_RATE, 3),
        "requests": requests,
        "answered_429": refused,
        "share_429": round(refused / requests, 4) if requests else 0.0,
    }
    if killed_at is not None:
        finished = sorted(t for r in reports for t in r["finished"])
        end = finished[-1] - 1.0
        row["rate_after_kill"] = round(
            sum(1 for t in finished if killed_at + 3 <= t <= end) / max(0.1, end - killed_at - 3),
            2,
        )
        row["seconds_to_18_per_s"] = _seconds_to(finished, killed_at, 0.9 * SERVER_RATE)
    else:
        row["tasks"] = PROCESSES * tasks
        row["requests_per_task"] = round(requests / (PROCESSES * tasks), 3)
    return row


def _seconds_to(finished: list[float], since: float, rate: float) -> float | None:
    """Seconds from ``since`` until every later second (but the run's last) holds ``rate``."""
    end = finished[-1] - 1.0
    low = [
        t
        for t in finished
        if since < t <= end
        and bisect.bisect_right(finished, t) - bisect.bisect_right(finished, t - 1.0) < rate
    ]
    recovered = max(low, default=since)
    return round(recovered - since, 2) if recovered < end else None


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
            url = redis_server.url
            rows = {
                "a) each process paces itself": run_mode("local", tasks, folder),
                "b) one limit shared in Redis": run_mode(url, tasks, folder),
                "c) shared, sliding-window server": run_mode(url, tasks, folder, "sliding"),
                "d) shared, whole-second server": run_mode(url, tasks, folder, "fixed"),
                "e) shared, one of three killed": run_mode(
                    url, tasks, folder, "sliding", kill_after=3.0
                ),
            }
        finally:
            redis_server.stop()
    print(f"{'':34} {'req/s':>7} {'of server':>10} {'429s':>6} {'share 429':>10}")
    for name, row in rows.items():
        extra = (
            f"  after the kill: {row['rate_after_kill']}/s, 18/s after "
            f"{row['seconds_to_18_per_s']} s"
            if "rate_after_kill" in row
            else ""
        )
        print(
            f"{name:34} {row['combined_rate']:7.2f} {row['share_of_server_rate']:10.2f} "
            f"{row['answered_429']:6d} {row['share_429']:10.2%}{extra}"
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
