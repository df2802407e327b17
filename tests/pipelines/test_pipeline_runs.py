"""``aita run`` resumes what it finished, and its speedup is one the run earned."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from aita.cli import main
from aita.config import get_config
from aita.simulator import ProviderSimulator
from aita.workflows.service_time import most_in_flight, sequential_seconds
from tests.support.doubles import SimulatorFactory

ROOT = Path(__file__).resolve().parents[2]
STUDY_GUIDE = ROOT / "examples" / "pipelines" / "study_guide.yaml"
#: the example pipeline with the --input its {{input}} needs
GUIDE = (str(STUDY_GUIDE), "--input", "photosynthesis")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def as_provider(monkeypatch: pytest.MonkeyPatch, sim: ProviderSimulator) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MODEL", "sim/echo")
    get_config.cache_clear()


def results_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# -- the sequential estimate ----------------------------------------------------------------


def serial(starts: list[float], services: list[float]) -> list[tuple[float, float]]:
    """Calls on a server that works on one at a time, in arrival order."""
    calls, free = [], 0.0
    for start, service in zip(starts, services, strict=True):
        begin = max(start, free)
        free = begin + service
        calls.append((start, free))
    return calls


def parallel(starts: list[float], services: list[float]) -> list[tuple[float, float]]:
    return [(s, s + d) for s, d in zip(starts, services, strict=True)]


STARTS = [0.0, 0.001, 0.002, 0.003]


@pytest.mark.parametrize(
    ("services", "shape"),
    [
        ([0.2, 0.2, 0.2, 0.2], serial),
        ([0.2, 0.21, 0.19, 0.2], serial),
        ([0.5, 1.5, 0.25, 1.0], serial),
        ([0.2, 0.2, 0.2, 0.2], parallel),
        ([0.2, 0.22, 0.18, 0.21], parallel),
    ],
)
def test_sequential_estimate_is_the_sum_of_service_times(services: list[float], shape: Any) -> None:
    calls = [(-0.2, 0.0), *shape(STARTS, services), (5.0, 5.2)]  # with two steps run alone
    assert sequential_seconds(calls) == pytest.approx(sum(services) + 0.4, rel=0.02)


def test_a_one_at_a_time_server_is_never_credited_with_parallel_work() -> None:
    # four calls sent together; queueing made them take 0.2, 0.4, 0.6, 0.8 s
    calls = serial(STARTS, [0.2] * 4)
    assert [round(end - start, 2) for start, end in calls] == [0.2, 0.4, 0.6, 0.8]
    estimate = sequential_seconds(calls)
    assert estimate == pytest.approx(0.8, rel=0.02)  # not 2.0, the sum of the latencies
    assert estimate / (calls[-1][1] - calls[0][0]) == pytest.approx(1.0, rel=0.02)


def test_when_timings_cannot_tell_the_estimate_errs_low() -> None:
    # a parallel server whose calls happen to end like a queue's: the fewer slots are believed
    calls = parallel([0.0] * 4, [0.25, 0.5, 0.75, 1.0])
    assert sequential_seconds(calls) <= sum(end - start for start, end in calls)
    assert sequential_seconds(calls) == pytest.approx(1.0, rel=0.02)


def test_no_calls_no_estimate() -> None:
    assert sequential_seconds([]) == 0.0
    assert most_in_flight([(0, 1), (0.5, 2), (1, 3)]) == 2  # an end and a start at 1: not 3


# -- the speedup aita run reports -----------------------------------------------------------


def test_speedup_against_a_one_at_a_time_server_is_about_one(
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    as_provider(monkeypatch, simulator(announce=False, latency=0.25, concurrency=1))
    output = tmp_path / "o.json"
    code, out, err = run(capsys, "run", *GUIDE, "--yes", "--output", str(output))
    assert code == 0, err
    speedup = results_of(output)["speedup"]
    assert speedup == pytest.approx(1.0, rel=0.10), out
    assert f"speedup {speedup:.2f}x" in out


def test_speedup_against_a_parallel_server_is_the_measured_ratio(
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    as_provider(monkeypatch, simulator(announce=False, latency=0.25))
    one_by_one, together = tmp_path / "sequential.json", tmp_path / "parallel.json"
    monkeypatch.setenv("PIPELINE_PARALLEL_ENABLED", "false")
    get_config.cache_clear()
    assert run(capsys, "run", *GUIDE, "--yes", "--output", str(one_by_one))[0] == 0
    monkeypatch.setenv("PIPELINE_PARALLEL_ENABLED", "true")
    get_config.cache_clear()
    args = ["run", *GUIDE, "--yes", "--no-resume", "--output", str(together)]
    assert run(capsys, *args)[0] == 0
    measured = results_of(one_by_one)["total_duration"] / results_of(together)["total_duration"]
    assert measured > 1.5
    assert results_of(together)["speedup"] == pytest.approx(measured, rel=0.10)
    assert results_of(one_by_one)["speedup"] == pytest.approx(1.0, rel=0.10)


def test_a_run_that_called_nothing_claims_no_speedup(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "o.json"
    args = ["run", *GUIDE, "--dry-run", "--output", str(output)]
    assert run(capsys, *args)[0] == 0
    code, out, _ = run(capsys, *args)
    assert code == 0 and "6 steps: 0 done, 6 reused, 0 failed" in out
    assert "no calls made: no speedup to report" in out and "speedup 0" not in out
    assert results_of(output)["speedup"] is None


def test_one_call_claims_no_speedup(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pipeline = tmp_path / "one.yaml"
    pipeline.write_text("steps:\n  - {name: only, type: text, params: {prompt: 'Say hi'}}\n")
    code, out, err = run(capsys, "run", str(pipeline), "--dry-run", "--output", "o.json")
    assert code == 0, err
    assert "one call made: no speedup to report" in out and "speedup 0" not in out
    assert results_of(tmp_path / "o.json")["speedup"] is None


# -- resume ---------------------------------------------------------------------------------


def test_rerun_calls_only_for_steps_whose_inputs_changed(
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sim = simulator(announce=False)
    as_provider(monkeypatch, sim)
    pipeline = tmp_path / "guide.yaml"
    pipeline.write_text(STUDY_GUIDE.read_text())
    args = ["run", str(pipeline), "--input", "cells", "--yes", "--output", "o.json"]
    assert run(capsys, *args)[0] == 0
    assert sim.stats.requests == 6
    assert run(capsys, *args)[0] == 0
    assert sim.stats.requests == 6  # nothing changed: nothing called
    # the quiz prompt changes: the quiz runs again, and the review, which reads the quiz
    pipeline.write_text(pipeline.read_text().replace("five multiple-choice", "six true/false"))
    code, out, _ = run(capsys, *args)
    assert code == 0 and "6 steps: 2 done, 4 reused, 0 failed" in out
    assert sim.stats.requests == 8
    # another input changes every prompt
    other = ["run", str(pipeline), "--input", "atoms", "--yes", "--output", "o.json"]
    assert run(capsys, *other)[0] == 0
    assert sim.stats.requests == 14
    assert run(capsys, *other, "--no-resume")[0] == 0
    assert sim.stats.requests == 20


def test_a_failed_step_runs_again_and_the_rest_is_reused(
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    broken = {"on": True}

    def responder(request: dict[str, Any]) -> str | None:
        text = request["messages"][-1]["content"]
        if broken["on"] and text.startswith("Write ten flashcards"):
            raise RuntimeError("flashcards are down")
        return None

    sim = simulator(announce=False, responder=responder)
    as_provider(monkeypatch, sim)
    monkeypatch.setenv("AITA_MAX_RETRIES", "0")
    get_config.cache_clear()
    output = tmp_path / "o.json"
    code, out, err = run(capsys, "run", *GUIDE, "--yes", "--output", str(output))
    assert code == 1 and "6 steps: 5 done, 0 failed" not in out
    assert "6 steps: 5 done, 1 failed" in out and "failed flashcards:" in err
    assert results_of(output)["steps"]["flashcards"]["status"] == "failed"
    before = sim.stats.requests
    broken["on"] = False
    code, out, _ = run(capsys, "run", *GUIDE, "--yes", "--output", str(output))
    assert code == 0 and "6 steps: 1 done, 5 reused, 0 failed" in out
    assert sim.stats.requests == before + 1


@pytest.mark.slow
def test_interrupted_run_then_resumed_calls_only_for_unfinished_steps(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    review_asked = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def responder(request: dict[str, Any]) -> str | None:
        text = request["messages"][-1]["content"]
        calls.append(text.split()[0])
        if text.startswith("Check this summary") and not release.is_set():
            review_asked.set()
            release.wait(30)  # longer than the CLI waits for calls in flight after Ctrl-C
        return None

    sim = simulator(announce=False, responder=responder, latency=0.05)
    env = {
        **os.environ,
        "OPENROUTER_API_KEY": "sk-test-not-secret",
        "AITA_BASE_URL": sim.base_url,
        "AITA_MODEL": "sim/echo",
    }
    aita = [sys.executable, "-m", "aita"]
    command = [*aita, "run", *GUIDE, "--no-resume", "--yes", "--output", "o.json"]
    proc = subprocess.Popen(
        command, env=env, text=True, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert review_asked.wait(60), proc.communicate(timeout=5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    release.set()
    assert proc.returncode == 130, err
    assert "resume with: aita run" in err and "Traceback" not in err
    assert "checkpoint_name" not in err
    assert sorted(calls) == sorted(["Write", "Summarise", "Write", "Write", "List", "Check"])
    calls.clear()
    # the command it says resumes: as typed, less the --no-resume that would redo it all
    resume = shlex.split(err.split("resume with: aita ")[1].splitlines()[0])
    assert resume == [c for c in command[len(aita) :] if c != "--no-resume"]
    again = subprocess.run(
        [*aita, *resume], env=env, text=True, cwd=tmp_path, capture_output=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert calls == ["Check"]  # only the review had not finished
    assert "6 steps: 1 done, 5 reused, 0 failed" in again.stdout


@pytest.mark.parametrize(
    ("prompt", "variable"),
    [("Outline {{input}}", "input"), ("On {{ pipeline_input }}", "pipeline_input")],
)
def test_a_pipeline_that_reads_its_input_wants_input_given(
    prompt: str, variable: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pipeline = tmp_path / "guide.yaml"
    pipeline.write_text(
        f"steps:\n  - {{name: first, type: text, params: {{prompt: '{prompt}'}}}}\n"
        "  - {name: second, type: text, input_from: first, params: {prompt: 'Recap {{input}}'}}\n"
    )
    code, out, err = run(capsys, "run", str(pipeline), "--dry-run", "--output", "o.json")
    assert (code, out) == (2, "")
    assert err == f"aita: {pipeline} uses {{{{{variable}}}}}: give --input TEXT\n"
    assert list(tmp_path.iterdir()) == [pipeline]  # nothing run, nothing written
    # an empty text, asked for, is one
    args = ["run", str(pipeline), "--input", "", "--dry-run", "--output", "o.json"]
    assert run(capsys, *args)[0] == 0


def test_the_example_pipeline_without_input_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "run", str(STUDY_GUIDE), "--dry-run", "--output", "o.json")
    assert (code, out) == (2, "")
    assert err == f"aita: {STUDY_GUIDE} uses {{{{input}}}}: give --input TEXT\n"
    assert not Path("o.json").exists() and not Path("checkpoints").exists()


def test_a_pipeline_that_reads_no_input_runs_without_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """{{input}} after input_from is the earlier step's output, not the --input text."""
    pipeline = tmp_path / "fixed.yaml"
    pipeline.write_text(
        "steps:\n  - {name: first, type: text, params: {prompt: 'Outline photosynthesis'}}\n"
        "  - {name: second, type: text, input_from: first, params: {prompt: 'Recap {{input}}'}}\n"
    )
    code, out, err = run(capsys, "run", str(pipeline), "--dry-run", "--output", "o.json")
    assert code == 0, err
    assert "2 steps: 2 done, 0 failed" in out
    assert results_of(tmp_path / "o.json")["input"] == ""
