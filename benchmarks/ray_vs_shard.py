"""Benchmark: one requests file past one process, by hand-made shards vs on a Ray cluster.

    pip install -e '.[ray]' && python benchmarks/ray_vs_shard.py    # 600 lines a mode; ~3 min
    python benchmarks/ray_vs_shard.py --smoke                         # 60 lines, to keep it working

Every mode is ``aita batch run`` (8 workers a process) against a fresh simulator allowing 20
requests/s (0.05 s calls), side by side in one run: (a) one process at 20/s, the baseline;
(b) ``--shard 0/2`` and ``--shard 1/2`` at once, each told the whole limit (20/s), as two
machines on one key do; (c) the same two shards each given half (10/s), the split done by hand;
(d) ``--ray`` on a local cluster of 2 CPUs (``ray start --head``, the tests' own), one limit
for every block through the limiter actor. Printed, and written to
``benchmarks/results/ray_vs_shard.json``: the achieved rate (lines over the span from the
server's first to its last call), that as a share of the server's rate, the share of requests
answered 429, and the wall time of the command(s), start-up included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' Ray cluster, run from any folder

from aita.files import write_json_atomic  # noqa: E402
from aita.simulator import ProviderSimulator, SimulatorConfig  # noqa: E402
from tests.support.ray_cluster import start_ray_cluster  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ray_vs_shard.json"
SERVER_RATE = 20.0
LATENCY = 0.05
KEY = "bench-not-a-key"  # the simulator takes any key


def run_mode(
    name: str, lines: int, folder: Path, runs: list[list[str]], rate: float
) -> dict[str, Any]:
    """The commands of one mode at once against a fresh simulator; what they achieved."""
    folder.mkdir()
    requests = folder / "requests.jsonl"
    requests.write_text(
        "".join(
            json.dumps({"custom_id": f"r{i:05d}", "prompt": f"q {i}"}) + "\n" for i in range(lines)
        )
    )
    config = SimulatorConfig(rate_limit=SERVER_RATE, latency=LATENCY, announce=False)
    with ProviderSimulator(config) as sim:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "AITA_BASE_URL": sim.base_url,
            "OPENROUTER_API_KEY": KEY,
            "AITA_RATE_LIMIT_RPS": str(rate),
            "AITA_CHECKPOINT_DIR": str(folder / "checkpoints"),
            "AITA_SPEND_LEDGER": "none",
            "AITA_SHOW_PROGRESS": "false",
        }
        env.pop("AITA_REDIS_URL", None)
        calls: list[float] = []
        done = threading.Event()

        def watch() -> None:
            seen = 0
            while not done.is_set():
                if sim.stats.requests > seen:
                    seen = sim.stats.requests
                    calls.append(time.monotonic())
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aita",
                    "batch",
                    "run",
                    str(requests),
                    "-o",
                    str(folder / f"out{i}.jsonl"),
                    "--yes",
                    "-q",
                    *extra,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for i, extra in enumerate(runs)
        ]
        try:
            for process in processes:
                _, stderr = process.communicate(timeout=600)
                if process.returncode not in (0, 1):
                    raise SystemExit(f"{name}: {stderr.decode()[-2000:]}")
        finally:
            wall = time.monotonic() - started
            done.set()
            watcher.join()
        requests_made, refused = sim.stats.requests, sim.stats.rate_limited
    answered = sum(
        sum(json.loads(line)["error"] is None for line in out.read_text().splitlines())
        for out in folder.glob("out*.jsonl")
    )
    achieved = answered / (calls[-1] - calls[0]) if len(calls) > 1 else 0.0
    return {
        "mode": name,
        "lines": lines,
        "answered": answered,
        "rate": round(achieved, 2),
        "of_server_rate": round(achieved / SERVER_RATE, 3),
        "rate_limited_share": round(refused / max(1, requests_made), 4),
        "wall_time": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="60 lines a mode")
    lines = 60 if parser.parse_args().smoke else 600
    cluster = start_ray_cluster(num_cpus=2)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            shards = [["--shard", "0/2"], ["--shard", "1/2"]]
            for name, runs, rate in [
                ("one process", [[]], SERVER_RATE),
                ("2 shards, each told the whole limit", shards, SERVER_RATE),
                ("2 shards, the limit split by hand", shards, SERVER_RATE / 2),
                ("--ray, 2 CPUs, one shared limit", [["--ray", cluster.address]], SERVER_RATE),
            ]:
                rows.append(run_mode(name, lines, folder / str(len(rows)), runs, rate))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        cluster.stop()
    report = {
        "server_rate": SERVER_RATE,
        "latency": LATENCY,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "modes": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS, report)
    print(f"| mode | rate | of the server's | answered 429 | wall time ({lines} lines) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['mode']} | {row['rate']}/s | {row['of_server_rate']:.2f} | "
            f"{100 * row['rate_limited_share']:.1f}% | {row['wall_time']} s |"
        )


if __name__ == "__main__":
    main()
