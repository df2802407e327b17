"""SIGKILL a batch mid-run, again and again; resuming must end with every task's own result."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aita.engine import CheckpointManager
from tests.support.batch_runner import CHECKPOINT_INTERVAL, WORKERS
from tests.support.doubles import SimulatorFactory, check_saved_work, start_runner


def kill_after_requests(
    proc: subprocess.Popen[bytes], sim_requests: Callable[[], int], n: int
) -> None:
    start = sim_requests()
    deadline = time.monotonic() + 60
    while sim_requests() - start < n:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_three_sigkills_then_resume_gives_every_task_its_own_result(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    kills, count = 3, 1000
    sim = simulator(latency=0.02)
    out = tmp_path / "results.json"
    manager = CheckpointManager(tmp_path / "checkpoints")
    saved = 0
    for _ in range(kills):
        kill_after_requests(start_runner(sim.base_url, count, out), lambda: sim.stats.requests, 150)
        saved = check_saved_work(manager, at_least=saved + 1)  # loadable, and it grew
    proc = start_runner(sim.base_url, count, out)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    results = json.loads(out.read_text())
    assert results == {f"t{i:05d}": f"[sim] task {i}" for i in range(count)}
    assert len(manager.list_checkpoints("crash")) == 1  # every run resumed the same journal
    assert sim.stats.repeated_calls() <= kills * (WORKERS + CHECKPOINT_INTERVAL)
    assert sim.stats.repeated_calls() <= kills * WORKERS  # in fact: only the calls in flight
