"""A Batch API job while its batches run: how often it polls, what its progress bar shows, an
outage ridden through or given up on, a batch gone at the provider, and Ctrl-C (raised in the
process, at a chosen poll) followed by ``cancel_batch_api`` and a run that collects."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from aita.engine import (
    BatchInterrupted,
    OpenAICompatibleClient,
    ProviderOutage,
    cancel_batch_api,
)
from aita.simulator import ProviderSimulator
from aita.simulator.batches import _Batch as simulated_batch
from tests.engine.test_batch_api import MODEL, clock_of, provider, run, tasks
from tests.support.doubles import SimulatorFactory, client_for

pytestmark = pytest.mark.timeout(10)


def answers(n: int, prefix: str = "task") -> list[str]:
    return [f"[sim] {prefix} {i}" for i in range(n)]


def test_a_given_poll_interval_is_kept_until_the_batch_is_done(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, processing_seconds=2.0)
    result = run(client_for(sim, model=MODEL), tasks(4), poll_interval=0.5)
    assert [r.result for r in result.task_results] == answers(4)
    assert clock_of(sim).sleeps == [0.5, 0.5, 0.5, 0.5]
    assert sim.batch_api.stats.retrievals == 5  # at 0, 0.5, 1, 1.5 and 2 s


def test_polling_starts_at_a_second_and_slows_by_half_up_to_a_minute(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, processing_seconds=300)
    result = run(client_for(sim, model=MODEL), tasks(2), poll_interval=None)
    assert result.success_rate == 100.0
    growing = [1, 1.5, 2.25, 3.375, 5.0625, 7.59375, 11.390625, 17.0859375, 25.62890625]
    assert clock_of(sim).sleeps == pytest.approx(
        [*growing, 38.443359375, 57.6650390625, 60, 60, 60]
    )


def test_the_progress_bar_counts_the_requests_the_provider_has_done(
    simulator: SimulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # failed requests are done requests too
    sim = provider(simulator, processing_seconds=2.0, failure_rate=0.5)
    run(client_for(sim, model=MODEL), tasks(30), max_requests_per_file=15, show_progress=True)
    shown = capsys.readouterr().err.replace("\r", "\n").splitlines()
    polls = [line for line in shown if "⏳ Batch API: 2 batch(es)" in line]
    assert polls, shown
    assert any(re.search(r"[?\d]request/s", line) for line in polls)
    # Each batch of 15 has done a quarter more of its requests at each poll: 3, 7, 11, all.
    done = [line.split("|")[-1].split("/")[0].strip() for line in polls if "|" in line]
    assert [n for n in ("6", "14", "22", "30") if n in done] == ["6", "14", "22", "30"]
    assert any("in_progress=2" in line for line in polls)
    assert "completed=2" in polls[-1] and "30/30" in polls[-1] and "request" in polls[-1]


def test_without_progress_nothing_is_drawn(
    simulator: SimulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = provider(simulator)
    run(client_for(sim, model=MODEL), tasks(3), show_progress=False)
    assert "Batch API" not in capsys.readouterr().err


def test_an_outage_longer_than_the_budget_stops_polling_and_the_next_run_collects(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, processing_seconds=10)
    clock = clock_of(sim)
    clock.at[1] = lambda: sim.start_outage(3600, kind="503")
    client = client_for(sim, model=MODEL)
    with pytest.raises(ProviderOutage) as raised:
        run(client, tasks(5), outage_budget=2, max_requests_per_file=3)
    # Down from the poll at 0.5 s; at 2.5 s it has been 2 s, at 3 s it is over 2 s.
    assert clock.sleeps == [0.5] * 6
    assert str(raised.value) == (
        f"provider outage: cannot poll the Batch API at {sim.base_url}: no answer for over 2s "
        "(provider unavailable (HTTP 503): poll a batch: service unavailable); the batch(es) "
        "batch_sim000002, batch_sim000004 keep running at the provider: run again to collect "
        "them"
    )
    state = Path("checkpoints/job.batch-api.json")
    assert "batch_sim000004" in state.read_text()  # kept, for the next run

    sim.start_outage(0)
    result = run(client, tasks(5))
    assert [r.result for r in result.task_results] == answers(5)
    stats = sim.batch_api.stats
    assert (stats.uploads, stats.batches_created) == (2, 2)  # collected, not submitted again
    assert not state.exists()


@pytest.mark.parametrize("kind", ["503", "429"])
def test_outages_each_shorter_than_the_budget_are_ridden_through(
    simulator: SimulatorFactory, kind: str
) -> None:
    sim = provider(simulator, processing_seconds=6)
    clock = clock_of(sim)
    # Down from 0.5 s to 2 s and again from 3 s to 4.5 s: 1.5 s each, 3 s in all.
    clock.at[1] = clock.at[6] = lambda: sim.start_outage(3600, kind=kind)
    clock.at[4] = clock.at[9] = lambda: sim.start_outage(0)
    result = run(client_for(sim, model=MODEL), tasks(3), outage_budget=2)
    assert [r.result for r in result.task_results] == answers(3)
    assert sim.stats.outage_hits == 6


def test_a_batch_gone_at_the_provider_is_submitted_again(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = provider(simulator)
    clock_of(sim).at[1] = sim.batch_api._batches.clear  # the provider lost it
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        result = run(client_for(sim, model=MODEL), tasks(4))
    assert [r.result for r in result.task_results] == answers(4)
    assert [r.retry_count for r in result.task_results] == [1, 1, 1, 1]
    assert sim.batch_api.stats.batches_created == 2
    assert "batch batch_sim000002 is gone at the provider; submitting again" in caplog.messages


def test_a_batch_gone_in_the_last_round_fails_its_tasks_saying_so(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    clock_of(sim).at[1] = sim.batch_api._batches.clear
    result = run(client_for(sim, model=MODEL), tasks(2), max_rounds=1)
    assert [r.error for r in result.task_results] == [
        "provider unavailable: not answered (the batch gone)"
    ] * 2
    assert [r.error_type for r in result.task_results] == ["ProviderUnavailable"] * 2


def interrupt() -> None:
    raise KeyboardInterrupt


def left_open(
    simulator: SimulatorFactory, n: int
) -> tuple[ProviderSimulator, OpenAICompatibleClient]:
    """A simulator and a client whose first run of ``n`` tasks was stopped at its first poll,
    leaving its batch open."""
    sim = provider(simulator)
    clock_of(sim).at[1] = interrupt
    client = client_for(sim, model=MODEL)
    with pytest.raises(BatchInterrupted):
        run(client, tasks(n))
    return sim, client


def test_ctrl_c_while_polling_keeps_the_batch_then_cancel_stops_it_and_a_run_collects(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, processing_seconds=2.0)
    clock = clock_of(sim)
    clock.at[2] = interrupt  # at 1 s: half of each batch's requests are done
    client = client_for(sim, model=MODEL)
    with pytest.raises(KeyboardInterrupt) as raised:
        run(client, tasks(10))
    interrupted = raised.value
    assert isinstance(interrupted, BatchInterrupted)
    assert str(interrupted) == (
        "interrupted after 0/10 tasks; 1 batch(es) keep running at the provider; run again "
        "with checkpoint_name='job' to collect them (nothing is submitted twice)"
    )
    assert interrupted.checkpoint_name == "job"
    assert interrupted.checkpoint_path is not None and interrupted.checkpoint_path.is_file()
    stats = sim.batch_api.stats
    assert (stats.batches_created, stats.cancels) == (1, 0)

    assert cancel_batch_api(client, "job") == ["batch_sim000002"]
    assert stats.cancels == 1
    result = run(client, tasks(10))  # collects the 5 answers the cancelled batch gave
    assert [r.result for r in result.task_results] == answers(10)
    assert (stats.batches_created, stats.uploaded_requests) == (2, 15)
    assert stats.repeated_answers() == 0
    assert sorted(r.retry_count for r in result.task_results) == [0] * 5 + [1] * 5
    assert cancel_batch_api(client, "job") == []


def test_ctrl_c_counts_the_tasks_already_answered(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    run(client, tasks(3))
    clock = clock_of(sim)
    clock.at[len(clock.sleeps) + 1] = interrupt
    with pytest.raises(BatchInterrupted, match=r"^interrupted after 3/8 tasks; 1 batch"):
        run(client, tasks(8))


def test_ctrl_c_before_anything_was_submitted_names_no_running_batch(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    run(client, tasks(2))

    def stop(result: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted) as raised:
        run(client, tasks(4), on_task_complete=stop)  # at the first answer from the journal
    assert str(raised.value) == (
        "interrupted after 1/4 tasks; run again with checkpoint_name='job' to collect them "
        "(nothing is submitted twice)"
    )
    assert sim.batch_api.stats.uploads == 1


def test_a_run_that_does_not_resume_cancels_what_an_earlier_run_left(
    simulator: SimulatorFactory,
) -> None:
    sim, client = left_open(simulator, 4)
    result = run(client, tasks(4), resume_from_checkpoint=False)
    assert [r.result for r in result.task_results] == answers(4)
    stats = sim.batch_api.stats
    assert (stats.cancels, stats.batches_created, stats.uploaded_requests) == (1, 2, 8)
    assert not Path("checkpoints/job.batch-api.json").exists()


def test_cancel_looks_in_the_checkpoint_folder_it_is_given(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    clock_of(sim).at[1] = interrupt
    client = client_for(sim, model=MODEL)
    with pytest.raises(BatchInterrupted):
        run(client, tasks(2), checkpoint_dir="elsewhere")
    assert cancel_batch_api(client, "job") == []
    assert cancel_batch_api(client, "job", checkpoint_dir="elsewhere") == ["batch_sim000002"]


def test_a_batch_whose_keys_went_missing_answers_nothing_and_its_tasks_say_so(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = provider(simulator)

    def lose_keys() -> None:
        for path in Path("checkpoints/job.batch-api").glob("*.keys.jsonl"):
            path.unlink()

    clock_of(sim).at[1] = lose_keys
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        result = run(client_for(sim, model=MODEL), tasks(2), max_rounds=1)
    assert [r.error for r in result.task_results] == ["provider unavailable: not answered"] * 2
    assert "keys.jsonl: unreadable" in caplog.text


def test_a_resumed_run_rides_through_an_outage_from_its_very_first_poll(
    simulator: SimulatorFactory,
) -> None:
    sim, client = left_open(simulator, 2)
    clock = clock_of(sim)
    sim.start_outage(3600, kind="503")  # the batch left open is the first thing asked for
    clock.at[len(clock.sleeps) + 2] = lambda: sim.start_outage(0)
    result = run(client, tasks(2), outage_budget=2)
    assert [r.result for r in result.task_results] == answers(2)
    assert sim.stats.outage_hits == 2


def test_every_batch_is_polled_at_each_poll_whatever_another_one_did(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, processing_seconds=2.0)  # polled every 0.5 s
    clock = clock_of(sim)
    clock.at[1] = lambda: sim.batch_api._batches.pop("batch_sim000002")  # the first is lost
    result = run(client_for(sim, model=MODEL), tasks(4), max_requests_per_file=2)
    assert [r.result for r in result.task_results] == answers(4)
    # the first batch at 0 and 0.5 s; the second at 0, 0.5, 1, 1.5 and 2 s; the first's
    # tasks again in a third batch, from 2 to 4 s
    assert sim.batch_api.stats.retrievals == 2 + 5 + 5

    down = provider(simulator, processing_seconds=10)
    clock_of(down).at[1] = lambda: down.start_outage(3600, kind="503")
    with pytest.raises(ProviderOutage):
        run(
            client_for(down, model=MODEL),
            tasks(4),
            checkpoint_name="down",
            max_requests_per_file=2,
            outage_budget=1,
        )
    # down from 0.5 s: both batches polled at 0.5, 1 and 1.5 s, the budget spent at the
    # first poll at 2 s
    assert down.stats.outage_hits == 3 * 2 + 1


def test_a_batch_the_provider_gives_no_counts_for_shows_none_done_until_it_ends(
    simulator: SimulatorFactory, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def without_counts(batch: Any, *args: Any) -> dict[str, Any]:
        data = to_json(batch, *args)
        data["request_counts"] = None  # optional in the Batch object
        return data

    to_json = simulated_batch.to_json
    monkeypatch.setattr(simulated_batch, "to_json", without_counts)
    sim = provider(simulator)
    result = run(client_for(sim, model=MODEL), tasks(3), show_progress=True)
    assert [r.result for r in result.task_results] == answers(3)
    shown = capsys.readouterr().err.replace("\r", "\n").splitlines()
    done = [line.split("|")[-1].split("/")[0].strip() for line in shown if "Batch API" in line]
    assert done and set(done) <= {"0", "3"} and done[-1] == "3", done


def test_the_polling_bar_follows_a_terminal_resized_while_it_waits(
    simulator: SimulatorFactory, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    width = [121]

    def terminal_size(fd: int = 2) -> os.terminal_size:
        return os.terminal_size((width[0], 25))

    monkeypatch.setattr(os, "get_terminal_size", terminal_size)
    sim = provider(simulator, processing_seconds=2.0)
    clock_of(sim).at[2] = lambda: width.__setitem__(0, 61)
    run(client_for(sim, model=MODEL), tasks(3), show_progress=True)
    err = capfd.readouterr().err
    widths = [len(line.rstrip()) for line in err.split("\r") if "Batch API" in line]
    assert widths[0] > 100 and widths[-1] <= 60, widths  # as wide as the terminal is now
