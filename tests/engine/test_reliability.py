"""Faults, crashes, interrupts, bad input and secrets, against the simulator over real HTTP."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aita.cli import main
from aita.engine import (
    CheckpointManager,
    ExponentialBackoff,
    ParallelLLMExecutor,
    create_openrouter_client,
)
from tests.support.batch_runner import WORKERS
from tests.support.doubles import (
    SimulatorFactory,
    assert_own_answers_in_order,
    check_saved_work,
    client_for,
    executor_for,
    questions,
    start_runner,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "midterm"


@pytest.mark.slow
def test_every_task_survives_500s_empty_and_malformed_bodies_and_hangs(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator(
        latency=0.01, error_rate=0.15, empty_rate=0.05, malformed_rate=0.05, hang_rate=0.03,
        hang_seconds=10,
    )  # fmt: skip
    executor = executor_for(
        client_for(sim, timeout=2.0), max_workers=16, max_retries=8,
        backoff=ExponentialBackoff(initial=0.05, maximum=1.0),
    )  # fmt: skip
    result = executor.execute_batch(questions(300), checkpoint_name="faults")
    assert_own_answers_in_order(result.task_results)
    assert sim.stats.by_status[500] > 20 and result.metrics.total_retries > 40


def test_exhausted_retries_are_reported_per_task_and_the_rest_is_saved(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator(error_rate=0.5)  # a task fails both attempts with p = 0.25
    result = executor_for(client_for(sim), max_retries=1).execute_batch(
        questions(60), checkpoint_name="partial"
    )
    failed, ok = result.failed_results, result.successful_results
    assert failed and ok
    assert all("simulated internal error" in (r.error or "") for r in failed)
    assert all(r.retry_count == 1 for r in failed)
    assert result.checkpoint_path is not None
    saved = CheckpointManager("checkpoints").load(result.checkpoint_path)
    assert set(saved.succeeded) == {r.task_id for r in ok}
    assert set(saved.failed) == {r.task_id for r in failed}


def test_a_refused_key_stops_the_batch_instead_of_a_storm_of_401s(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator(api_key="sk-right", latency=0.02)
    result = executor_for(client_for(sim), max_workers=4, max_retries=5).execute_batch(
        questions(50)
    )
    assert sim.stats.by_status[401] <= 4  # the calls already in flight, and no retry
    kinds = {r.error_type for r in result.task_results}
    assert kinds == {"AuthenticationFailed", "Cancelled"}
    assert "refused the API key" in (result.task_results[-1].error or "")


@pytest.mark.slow
def test_crash_loop_of_random_sigkills_ends_with_one_correct_result_per_task(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    kills = int(os.environ.get("CRASH_LOOP_KILLS", "10"))
    count = 600
    sim = simulator(latency=0.02)
    out = tmp_path / "results.json"
    manager = CheckpointManager(tmp_path / "checkpoints")
    rng = random.Random(7)
    saved = 0
    for _ in range(kills):
        proc = start_runner(sim.base_url, count, out)
        # Kill only once the journal shows progress (a kill before any work tests nothing),
        # then at a random instant within the next tenth of a second: mid-call, mid-write.
        target = saved + rng.randint(1, 40)
        deadline = time.monotonic() + 60
        while journal_lines(manager) < target:
            assert proc.poll() is None and time.monotonic() < deadline, "no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = check_saved_work(manager, at_least=saved + 1)
    proc = start_runner(sim.base_url, count, out)
    assert proc.wait(timeout=120) == 0
    assert json.loads(out.read_text()) == {f"t{i:05d}": f"[sim] task {i}" for i in range(count)}
    assert sim.stats.repeated_calls() <= kills * WORKERS


def journal_lines(manager: CheckpointManager) -> int:
    """Finished tasks in the crash batch's journal so far (header and run lines aside)."""
    latest = manager.find_latest_checkpoint("crash")
    if latest is None:
        return 0
    return sum(1 for line in latest.read_bytes().splitlines() if line.startswith(b'{"task_id"'))


def copy_example(tmp_path: Path) -> Path:
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    return tmp_path / "data"


def interrupt(args: list[str], ready: Callable[[], bool]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AITA_DRY_RUN_LATENCY": "0.3", "AITA_MAX_WORKERS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aita", *args], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["transcribe", "grade"])
def test_ctrl_c_in_each_assignment_command_then_resume(tmp_path: Path, command: str) -> None:
    data = copy_example(tmp_path)
    common = ["--data-dir", str(data), "--assignment", "midterm", "--dry-run"]
    results = data / "midterm" / "results" / "dry-run"
    if command == "grade":
        assert main(["generate-rubric", *common]) == 0
        assert main(["transcribe", *common]) == 0
        ready = lambda: len(list((results / "grades").glob("*.json"))) >= 1  # noqa: E731
    else:
        ready = lambda: len(list(results.rglob("page_*.json"))) >= 2  # noqa: E731
    stopped = interrupt([command, *common], ready)
    assert stopped.returncode == 130, stopped.stderr
    assert f"resume with: aita {command}" in stopped.stderr and "Traceback" not in stopped.stderr
    again = subprocess.run(
        [sys.executable, "-m", "aita", command, *common],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert "reused from earlier runs" in again.stdout
    assert "; 0 reused" not in again.stdout and "\n0 grades reused" not in again.stdout


@pytest.mark.slow
def test_ctrl_c_in_generate_course_then_resume(tmp_path: Path) -> None:
    notes = ROOT / "examples" / "course" / "notes.md"
    args = ["generate-course", "--content", str(notes), "--title", "T", "--output-dir",
            str(tmp_path / "out"), "--dry-run"]  # fmt: skip
    stopped = interrupt(args, lambda: len(list((tmp_path / "out").rglob("chapter_*.md"))) >= 1)
    assert stopped.returncode == 130 and "resume with: aita generate-course" in stopped.stderr
    again = subprocess.run(
        [sys.executable, "-m", "aita", *args], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert "5/5 chapters written" in again.stdout
    assert len(list((tmp_path / "out" / "T").glob("chapter_*.md"))) == 5


def test_invalid_setting_is_exit_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = copy_example(tmp_path)
    monkeypatch.setenv("AITA_MAX_WORKERS", "lots")
    from aita.config import get_config

    get_config.cache_clear()
    code = main(
        ["generate-rubric", "--data-dir", str(data), "--assignment", "midterm", "--dry-run"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("aita: AITA_MAX_WORKERS:") and err.count("\n") == 1
    assert not (data / "midterm" / "results").exists()


def test_corrupt_results_file_is_reported_not_overwritten(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = copy_example(tmp_path)
    rubrics = data / "midterm" / "results" / "dry-run" / "rubrics.json"
    rubrics.parent.mkdir(parents=True)
    rubrics.write_text("{ half a file")
    code = main(
        ["generate-rubric", "--data-dir", str(data), "--assignment", "midterm", "--dry-run"]
    )
    assert code == 2 and "rubrics.json: cannot read earlier results" in capsys.readouterr().err
    assert rubrics.read_text() == "{ half a file"


SENTINEL = "SENTINEL-API-KEY-abcdef0123456789"


def test_the_key_never_reaches_output_logs_or_files(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    """A provider that refuses the key and echoes it back, driven through the CLI."""
    sim = simulator(api_key="sk-or-v1-the-real-one")
    data = copy_example(tmp_path)
    env = {**os.environ, "OPENROUTER_API_KEY": SENTINEL, "AITA_BASE_URL": sim.base_url}
    done = subprocess.run(
        [sys.executable, "-m", "aita", "-v", "generate-rubric", "--data-dir", str(data),
         "--assignment", "midterm", "--yes"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "authentication failed" in done.stderr
    assert SENTINEL not in done.stdout + done.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".checkpoint.json") for p in files)
    assert not [p for p in files if SENTINEL.encode() in p.read_bytes()]
    client = create_openrouter_client(api_key=SENTINEL, base_url=sim.base_url)
    executor = ParallelLLMExecutor(client, show_progress=False)
    shown = [repr(client), repr(executor), *(repr(value) for value in vars(executor).values())]
    assert not [text for text in shown if SENTINEL in text]
