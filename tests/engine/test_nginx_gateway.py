"""A real enforcer nobody here wrote: Debian's nginx with ``limit_req`` in front of the simulator.

nginx answers 429 with no rate headers and no ``retry-after``. With ``burst=10`` it admits a
small burst; with ``burst=0`` only requests at least 1/rate apart, as they arrive, pass. The
bounds are looser than the benchmark's targets (``benchmarks/limits.py``, ``nginx_*``): these
check that the client keeps to such a server on a busy machine, the benchmark measures how well.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aita.engine import create_openrouter_client
from tests.support.doubles import (
    TEST_KEY,
    SimulatorFactory,
    assert_own_answers_in_order,
    executor_for,
    questions,
)
from tests.support.nginx_gateway import NGINX, NginxGateway

pytestmark = [
    pytest.mark.real_server,
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not installed (apt-get install nginx-light)"
    ),
]

RATE = 20
CALLS = 100


def run_through_nginx(
    simulator: SimulatorFactory, folder: Path, *, burst: int, client_rate: float
) -> tuple[float, float]:
    """The share of nginx's rate achieved and the share of requests refused."""
    sim = simulator(latency=0.05)
    with NginxGateway(folder, upstream_port=sim.port, rate=RATE, burst=burst) as gateway:
        client = create_openrouter_client(api_key=TEST_KEY, base_url=gateway.base_url)
        executor = executor_for(client, max_workers=16, rate_limit=client_rate, max_retries=8)
        started = time.monotonic()
        result = executor.execute_batch(questions(CALLS))
        wall = time.monotonic() - started
        client.close()
    assert_own_answers_in_order(result.task_results)
    assert sim.stats.requests == CALLS  # what nginx let through was answered once each
    metrics = result.metrics
    return CALLS / RATE / wall, metrics.rate_limited_responses / metrics.requests


def test_told_the_true_limit_the_client_keeps_to_nginx(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    share, refused = run_through_nginx(simulator, tmp_path, burst=10, client_rate=RATE)
    assert share >= 0.8 and refused < 0.05


def test_told_twice_the_limit_the_client_learns_nginx_limit(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    share, refused = run_through_nginx(simulator, tmp_path, burst=10, client_rate=2 * RATE)
    assert share >= 0.75 and refused < 0.25  # most of them while it learns, in the first 3 s


def test_without_a_burst_only_spacing_passes_and_the_client_keeps_it(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    share, refused = run_through_nginx(simulator, tmp_path, burst=0, client_rate=RATE)
    assert share >= 0.7 and refused < 0.1
