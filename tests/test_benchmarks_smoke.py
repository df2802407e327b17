"""The benchmark script still runs (smoke size); its figures are not asserted here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aita.simulator import SimulatorConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmark_script_runs_at_smoke_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {"aita", "sequential", "threadpool + SDK retries"} <= {row["runner"] for row in rows}
    assert all(row["failed"] == 0 for row in rows if row["runner"] == "aita")
    assert all(row["efficiency"] is None for row in rows if row["failed"])
    assert report["overhead"][0]["tasks_per_second"] > 0
    assert report["memory"]["bytes_per_task"] > 0


def load_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_runner_that_loses_tasks_gets_no_efficiency() -> None:
    bench = load_benchmark()
    scenario = bench.Scenario("z", "z) tiny", 4, 2, SimulatorConfig(), None, ideal=0.001)
    whole = bench.measure(scenario, "keeps all", lambda s, url: s.tasks)
    lossy = bench.measure(scenario, "loses one", lambda s, url: s.tasks - 1)
    assert whole.efficiency is not None and bench.efficiency_text(whole) != "-"
    assert lossy.efficiency is None and bench.efficiency_text(lossy) == "-"
    assert lossy.failed == 1
