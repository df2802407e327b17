"""The benchmark script still runs (smoke size); its figures are not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert report["overhead"][0]["tasks_per_second"] > 0
    assert report["memory"]["bytes_per_task"] > 0
