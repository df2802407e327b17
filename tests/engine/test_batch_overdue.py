"""A Batch API batch that a provider leaves ``in_progress`` past its completion window is not
polled forever: the run stops saying so, and the batch is kept for a later run to collect."""

from __future__ import annotations

import time

import pytest

from aita.engine import BatchOverdue
from tests.engine.test_batch_api import MODEL, provider, run, tasks
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
