"""The limit and worker benchmarks still run (smoke size); their figures go into the README."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, out: Path, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(out.read_text())
    return report


@pytest.mark.slow
def test_the_limits_benchmark_runs_against_every_enforcement(tmp_path: Path) -> None:
    rows = run("limits.py", tmp_path / "limits.json", "--only", "at_limit")["rows"]
    assert isinstance(rows, dict)
    assert set(rows) == {"at_limit_bucket", "at_limit_sliding", "at_limit_fixed"}
    assert all(row["completed"] == 30 for row in rows.values())


@pytest.mark.slow
def test_the_workers_benchmark_compares_auto_with_fixed_counts(tmp_path: Path) -> None:
    report = run("workers.py", tmp_path / "workers.json", "--only", "slots_sim")
    rows = report["slots_sim"]["rows"]  # type: ignore[index]
    assert [row["workers"] for row in rows] == [1, 2, 4, 8, 16, "auto"]
    assert all(row["completed"] == 40 for row in rows)
    # the unloaded time is the one-worker run's: one worker is always 1.0x of it
    assert rows[0]["latency_vs_unloaded"] == 1.0
    assert set(report["slots_sim"]["fixed_on_target"]) <= {4, 8, 16}  # type: ignore[index]
