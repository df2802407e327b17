"""Three processes, one provider limit: together at the limit's rate, without 429s, even when
one of them is killed. Each process is a real executor; the provider is the simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aita.simulator import ProviderSimulator
from tests.support.doubles import SimulatorFactory
from tests.support.redis_server import RedisServer, redis_server

pytestmark = [pytest.mark.slow, pytest.mark.real_server]
__all__ = ["redis_server"]  # the fixture, imported so that pytest finds it

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 20


def start(sim: ProviderSimulator, redis_url: str, count: int, prefix: str, out: Path) -> Any:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        "-m",
        "tests.support.shared_limit_runner",
        sim.base_url,
        redis_url,
        str(count),
        prefix,
    ]
    return subprocess.Popen(
        [sys.executable, *command, str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(process: Any, out: Path) -> dict[str, Any]:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()[-2000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def rate_of(times: list[float]) -> float:
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0])


def test_three_processes_share_one_limit_at_its_full_rate_without_429s(
    redis_server: RedisServer, simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = simulator(rate_limit=LIMIT, latency=0.05)
    outs = [tmp_path / f"p{i}.json" for i in range(3)]
    processes = [start(sim, redis_server.url, 45, f"p{i}", out) for i, out in enumerate(outs)]
    reports = [finish(p, out) for p, out in zip(processes, outs, strict=True)]
    assert [r["own_answers"] for r in reports] == [45, 45, 45]
    span = max(r["finished"][-1] for r in reports) - min(r["first_start"] for r in reports)
    assert 135 / span >= 0.9 * LIMIT
    assert sim.stats.rate_limited < 0.01 * sim.stats.requests


def test_one_of_three_killed_the_other_two_go_on_at_the_full_shared_rate(
    redis_server: RedisServer, simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = simulator(rate_limit=LIMIT, latency=0.05)
    outs = [tmp_path / f"p{i}.json" for i in range(3)]
    processes = [start(sim, redis_server.url, 60, f"p{i}", out) for i, out in enumerate(outs)]
    deadline = time.monotonic() + 60
    while not all(Path(f"{out}.started").exists() for out in outs):
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.05)
    time.sleep(1.0)
    killed_at = time.time()
    os.kill(processes[0].pid, signal.SIGKILL)
    processes[0].wait()
    survivors = [finish(p, out) for p, out in zip(processes[1:], outs[1:], strict=True)]
    assert [r["own_answers"] for r in survivors] == [60, 60]
    # The killed process's reserved slots (one per worker) pass within half a second.
    after = [t for r in survivors for t in r["finished"] if t >= killed_at + 0.5]
    assert len(after) >= 40
    assert rate_of(after) >= 0.9 * LIMIT
    assert sim.stats.rate_limited < 0.01 * sim.stats.requests
