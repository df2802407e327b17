"""A Batch API batch that a provider leaves ``in_progress`` past its completion window is not
polled forever: the run stops saying so, and the batch is kept for a later run to collect."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aita.engine import BatchOverdue
from aita.simulator.batches import _Batch as simulated_batch
from tests.engine.test_batch_api import MODEL, clock_of, provider, run, tasks
from tests.support.doubles import SimulatorFactory, client_for


@pytest.mark.timeout(10)
def test_a_batch_stuck_past_its_completion_window_stops_the_run_and_is_kept(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, processing_seconds=3600, window_seconds=1)  # never finishes
    client = client_for(sim, model=MODEL)
    started = time.monotonic()
    with pytest.raises(BatchOverdue, match=r"still in_progress .* past its completion window"):
        run(client, tasks(3))
    assert time.monotonic() - started < 15
    stats = sim.batch_api.stats
    assert (stats.batches_created, stats.cancels) == (1, 0)  # kept at the provider

    sim.batch_api.simulation.processing_seconds = 0  # the provider catches up
    result = run(client, tasks(3))
    assert [r.result for r in result.task_results] == [f"[sim] task {i}" for i in range(3)]
    assert stats.batches_created == 1  # collected, not submitted again


@pytest.mark.timeout(10)
def test_a_batch_with_no_window_is_overdue_at_the_first_poll_past_its_end(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, processing_seconds=10**9, window_seconds=0)
    with pytest.raises(BatchOverdue, match=r"still in_progress 1 s past"):
        run(client_for(sim, model=MODEL), tasks(1), poll_interval=0.05)
    assert clock_of(sim).sleeps == [0.05]  # 0.05 s late: not a tenth of a second more


@pytest.mark.timeout(10)
def test_a_batch_that_names_no_start_is_overdue_as_soon_as_its_end_is_past(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its window unknown, no share of it is waited for."""

    def without_start(batch: Any, *args: Any) -> dict[str, Any]:
        data = to_json(batch, *args)
        data["created_at"] = None
        return data

    to_json = simulated_batch.to_json
    monkeypatch.setattr(simulated_batch, "to_json", without_start)
    sim = provider(simulator, processing_seconds=10**9, window_seconds=1000)
    with pytest.raises(BatchOverdue, match=r"still in_progress 50 s past"):
        run(client_for(sim, model=MODEL), tasks(1), poll_interval=1050)
