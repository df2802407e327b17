"""Benchmark: how close to a server's limit aita runs, against lenient, strict and real enforcers.

    python benchmarks/limits.py                      # every scenario, about 6 minutes
    python benchmarks/limits.py --only at_limit      # scenarios whose name contains the word
    python benchmarks/limits.py --smoke              # tiny sizes, to keep the script working

Each scenario runs ``aita`` (one ``ParallelLLMExecutor``, in this process) against a fresh
provider simulator on loopback, whose limit is enforced as a token bucket (``bucket``: small
bursts pass), at most N requests in any sliding second (``sliding``: how many gateways enforce
"N per minute") or in each whole second (``fixed``), or behind Debian's nginx with ``limit_req``
(no rate headers, no ``retry-after``). Printed, and written to ``benchmarks/results/limits.json``:

- ``share``: the ideal time (tasks at the server's limit) over the wall time, 1.0 at best;
- ``429s`` and their share of the requests;
- ``recovery_s`` (recovery scenarios): seconds from an isolated 429 until the answers of the
  last second are back at 0.95 of the limit.

Scenarios (``<case>_<enforcement>``):
  at_limit    300 calls of 0.1 s, 16 workers, client and server at 25/s
  double      240 calls, client set to 30/s, the server allows 15/s
  header_*    200 calls at 20/s whose limit header is per second, per day, 0, 0.000001, garbage
  recovery    20/s for 12 s with one 429 injected after 4 s
  nginx_*     200 calls through nginx limit_req 20r/s: burst=10 told 20/s and 40/s, burst=0

The shared-limit (Redis) cases are in ``shared_limit.py``; ``--workers auto`` in ``workers.py``.
Nothing is asserted: the figures go into the README.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' nginx gateway, run from any folder

from aita.engine import ParallelLLMExecutor, SimpleLLMTask, create_openrouter_client  # noqa: E402
from aita.files import write_json_atomic  # noqa: E402
from aita.simulator import ProviderSimulator, SimulatorConfig  # noqa: E402
from tests.support.nginx_gateway import NGINX, NginxGateway  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "limits.json"
ENFORCEMENTS = ("bucket", "sliding", "fixed")
HEADERS = {"per_second": None, "per_day": None, "zero": "0", "tiny": "0.000001", "garbage": "x"}


@dataclass
class Case:
    name: str
    tasks: int
    workers: int
    server_rate: float
    client_rate: float | None
    server: SimulatorConfig
    #: nginx limit_req burst in front of the simulator (None: no nginx)
    nginx_burst: int | None = None
    #: seconds into the run at which one 429 is injected (None: none)
    refuse_at: float | None = None


def cases(smoke: bool) -> list[Case]:
    k = 0.1 if smoke else 1.0
    found = []
    for mode in ENFORCEMENTS:
        base = SimulatorConfig(latency=0.1, enforcement=mode)
        found += [
            Case(f"at_limit_{mode}", int(300 * k), 16, 25, 25,
                 replace(base, rate_limit=25)),
            Case(f"double_{mode}", int(240 * k), 16, 15, 30,
                 replace(base, rate_limit=15)),
            Case(f"recovery_{mode}", int(240 * k), 16, 20, 20,
                 replace(base, rate_limit=20), refuse_at=4.0 * k),
        ]  # fmt: skip
        for header, text in HEADERS.items():
            window = {"per_second": 1.0, "per_day": 86400.0}.get(header, 60.0)
            server = replace(base, rate_limit=20, limit_window=window, limit_header=text)
            found.append(Case(f"header_{header}_{mode}", int(200 * k), 16, 20, 20, server))
    upstream = SimulatorConfig(latency=0.1)
    found += [
        Case("nginx_burst10", int(200 * k), 16, 20, 20, upstream, nginx_burst=10),
        Case("nginx_burst10_double", int(200 * k), 16, 20, 40, upstream, nginx_burst=10),
        Case("nginx_burst0", int(200 * k), 16, 20, 20, upstream, nginx_burst=0),
    ]
    return found


def recovery_seconds(finished: list[float], refused_at: float, rate: float) -> float | None:
    """Seconds from ``refused_at`` until the answers of every later second (up to the last one
    of the run, when the tasks run out) hold 0.95 of ``rate``; None if they never do."""
    finished = sorted(t for t in finished)
    end = finished[-1] - 1.0
    low = [t for t in finished if refused_at < t <= end and _in_second(finished, t) < 0.95 * rate]
    recovered = max(low, default=refused_at)
    return round(recovered - refused_at, 2) if recovered < end else None


def _in_second(times: list[float], until: float) -> int:
    return bisect.bisect_right(times, until) - bisect.bisect_right(times, until - 1.0)


def measure(case: Case, folder: Path) -> dict[str, Any]:
    with ProviderSimulator(case.server) as sim:
        gateway = None
        base_url = sim.base_url
        if case.nginx_burst is not None:
            gateway = NginxGateway(
                folder / case.name, upstream_port=sim.port, rate=int(case.server_rate),
                burst=case.nginx_burst,
            )  # fmt: skip
            base_url = gateway.base_url
        try:
            return _run(case, sim, base_url)
        finally:
            if gateway is not None:
                gateway.stop()


def _run(case: Case, sim: ProviderSimulator, base_url: str) -> dict[str, Any]:
    client = create_openrouter_client(api_key="bench", base_url=base_url, timeout=30)
    executor = ParallelLLMExecutor(
        client, max_workers=case.workers, rate_limit=case.client_rate,
        enable_checkpointing=False, show_progress=False, max_retries=8,
    )  # fmt: skip
    finished: list[float] = []
    started = time.monotonic()
    timer = None
    if case.refuse_at is not None:
        timer = threading.Timer(case.refuse_at, sim.refuse_next)
        timer.start()
    result = executor.execute_batch(
        [SimpleLLMTask(f"t{i}", f"task {i}") for i in range(case.tasks)],
        on_task_complete=lambda _: finished.append(time.monotonic() - started),
    )
    wall = time.monotonic() - started
    client.close()
    if timer is not None:
        timer.cancel()
    metrics = result.metrics
    ideal = case.tasks / case.server_rate
    row: dict[str, Any] = {
        "share": round(ideal / wall, 3) if metrics.completed_tasks == case.tasks else None,
        "wall_s": round(wall, 2),
        "completed": metrics.completed_tasks,
        "requests": metrics.requests,
        "429s": metrics.rate_limited_responses,
        "share_429": round(metrics.rate_limited_responses / max(1, metrics.requests), 4),
    }
    if case.refuse_at is not None:
        row["recovery_s"] = recovery_seconds(finished, case.refuse_at, case.server_rate)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--only", action="append", help="run scenarios whose name has this")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the figures")
    args = parser.parse_args(argv)
    # As the CLI does: the objects of the imports out of the collector's reach, so the first
    # scenario does not take the process's first full collection (a 0.1 s stall) alone.
    gc.freeze()
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases(args.smoke):
            if args.only and not any(word in case.name for word in args.only):
                continue
            if case.nginx_burst is not None and NGINX is None:
                print(f"skipped {case.name}: nginx is not installed (apt-get install nginx-light)")
                continue
            row = rows[case.name] = measure(case, Path(scratch))
            extra = f" recovery {row['recovery_s']}s" if "recovery_s" in row else ""
            share = "-" if row["share"] is None else f"{row['share']:.2f}"
            print(
                f"{case.name:28} share {share:>5}  429s {row['429s']:4d} "
                f"({row['share_429']:.1%}){extra}",
                flush=True,
            )
    write_json_atomic(args.json, {"smoke": args.smoke, "rows": rows})
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
