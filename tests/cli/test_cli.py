"""The ``aita`` command line, driven through its real entry point against the simulator."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aita.cli import main
from aita.config import get_config
from aita.engine import CheckpointManager
from aita.pipelines.dry_run import dry_run_responder
from tests.support.doubles import SimulatorFactory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "midterm"
STUDENTS = ["alice", "bob", "chen"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    return tmp_path / "data"


def aita(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it (``python -m aita`` is the same entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "aita", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def results(data_dir: Path) -> Path:
    """Where a dry run writes: apart from real results."""
    return data_dir / "midterm" / "results" / "dry-run"


@pytest.mark.slow
def test_dry_run_chain_on_the_sample_assignment(data_dir: Path) -> None:
    common = ["--data-dir", str(data_dir), "--assignment", "Midterm", "--dry-run", "--yes"]
    for command in ("generate-rubric", "transcribe", "grade"):
        done = aita(command, *common)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    spec = json.loads((data_dir / "midterm" / "exam_spec.json").read_text())
    points = {q["question_id"]: q["points"] for q in spec["questions"]}
    rubrics = json.loads((results(data_dir) / "rubrics.json").read_text())
    assert set(rubrics) == set(points)
    for qid, rubric in rubrics.items():
        assert sum(c["points"] for c in rubric["criteria"]) == pytest.approx(points[qid])
    assert rubrics["1"]["source"] == "instructor"
    keys = json.loads((results(data_dir) / "answer_keys.json").read_text())
    assert set(keys) == set(points)
    for student in STUDENTS:
        answers = json.loads(
            (results(data_dir) / "transcriptions" / student / "answers.json").read_text()
        )
        assert set(answers) == set(points)
        assert all(a["text"] for a in answers.values())
        grades = json.loads((results(data_dir) / "grades" / f"{student}.json").read_text())
        assert set(grades) == set(points)
        for qid, g in grades.items():
            assert 0 <= g["points_awarded"] <= points[qid]
    summary = json.loads((results(data_dir) / "grades" / "summary.json").read_text())
    assert summary["class"]["count"] == 3
    assert set(summary["students"]) == set(STUDENTS)


def test_rerun_reuses_what_is_done_and_force_redoes_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--dry-run"]
    code, out, _ = run(capsys, "generate-rubric", *common)
    assert code == 0 and "0 reused" in out
    code, out, _ = run(capsys, "generate-rubric", *common)
    assert code == 0 and "19 reused" in out and "calls:" not in out
    code, out, _ = run(capsys, "generate-rubric", *common, "--force")
    assert code == 0 and "0 reused" in out and "calls: 19" in out


Q = {"question_id": "1", "question_text": "q", "points": 2}


def spec_json(**fields: object) -> str:
    return json.dumps({"exam_name": "x", "total_points": 2, "questions": [Q], **fields})


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (spec_json()[:-3], "invalid JSON at line 1"),
        (json.dumps({"exam_name": "x", "questions": [Q]}), "total_points: Field required"),
        (
            spec_json(questions=[{"question_id": "1", "question_text": "q"}]),
            "questions[0].points: Field required",
        ),
        (
            spec_json(questions=[{**Q, "points": "ten"}]),
            "questions[0].points: Input should be a valid number",
        ),
        (
            spec_json(questions=[Q, {**Q, "question_text": "r"}]),
            "duplicate question_id '1' (questions 1 and 2)",
        ),
        (spec_json(questions=[]), "questions: List should have at least 1 item"),
        ("[1, 2]", "Input should be a valid dictionary"),
    ],
)
def test_malformed_exam_spec_is_exit_2_with_one_line(
    data_dir: Path, capsys: pytest.CaptureFixture[str], content: str, problem: str
) -> None:
    spec = data_dir / "midterm" / "exam_spec.json"
    spec.write_text(content)
    code, _, err = run(
        capsys,
        "generate-rubric",
        "--data-dir",
        str(data_dir),
        "--assignment",
        "midterm",
        "--dry-run",
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("aita: ") and "exam_spec.json" in err
    assert problem in err
    assert not results(data_dir).exists()  # nothing written


def test_missing_assignment_is_exit_2_without_traceback(data_dir: Path) -> None:
    done = aita("transcribe", "--data-dir", str(data_dir), "--assignment", "Final", "--dry-run")
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"aita: assignment 'Final' not found in {data_dir} (found: midterm)"
    )


def test_missing_data_dir_says_how_to_set_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "grade", "--data-dir", str(tmp_path / "nope"), "--assignment", "x")
    assert code == 2 and "AITA_DATA_DIR" in err


def test_without_a_key_and_without_dry_run_says_how_to_set_one(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "generate-rubric", "--data-dir", str(data_dir), "--assignment", "midterm"
    )
    assert code == 2
    assert "OPENROUTER_API_KEY" in err and "--dry-run" in err


def test_grade_before_rubrics_says_what_to_run(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "grade", "--data-dir", str(data_dir), "--assignment", "midterm", "--dry-run"
    )
    assert code == 2 and "run aita generate-rubric first" in err


def test_one_student_and_an_unknown_student(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--dry-run"]
    code, out, _ = run(capsys, "transcribe", *common, "--student", "bob")
    assert code == 0 and "4/4 pages transcribed for 1 student" in out
    assert sorted(p.name for p in (results(data_dir) / "transcriptions").iterdir()) == ["bob"]
    code, _, err = run(capsys, "transcribe", *common, "--student", "zoe")
    assert code == 2 and "student 'zoe' not found" in err and "alice, bob, chen" in err


def test_student_is_found_in_any_case_as_assignment_is(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data-dir", str(data_dir), "--assignment", "MidTerm", "--dry-run"]
    code, _, err = run(capsys, "transcribe", *common, "--student", "BOB")
    assert code == 0, err
    assert sorted(p.name for p in (results(data_dir) / "transcriptions").iterdir()) == ["bob"]
    (data_dir / "midterm" / "submissions" / "Bob").mkdir()
    code, _, err = run(capsys, "transcribe", *common, "--student", "BOB")
    assert code == 2 and "matches Bob, bob" in err


def test_unreadable_page_fails_alone_and_the_rest_is_saved(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data_dir / "midterm" / "submissions" / "alice" / "page_005.png").write_bytes(b"not a png")
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--dry-run"]
    code, out, err = run(capsys, "transcribe", *common)
    assert code == 1
    assert "12/13 pages transcribed" in out and "alice: pages not transcribed: 5" in out
    assert "transcribe/alice/page_005" in err and "not a readable image" in err
    assert len(list((results(data_dir) / "transcriptions").rglob("page_*.json"))) == 12


def test_checkpoints_list_show_and_clean(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(
        capsys,
        "generate-rubric",
        "--data-dir",
        str(data_dir),
        "--assignment",
        "midterm",
        "--dry-run",
    )
    code, out, _ = run(capsys, "checkpoints", "list")
    assert code == 0 and "midterm__dry-run__generate-rubric" in out
    assert "19 tasks: 19 done, 0 failed" in out
    code, out, _ = run(capsys, "checkpoints", "show", "midterm__dry-run__generate-rubric")
    assert code == 0 and "19 done" in out
    code, out, err = run(capsys, "checkpoints", "clean")  # stdin is not a terminal here
    assert code == 1 and "--yes" in err
    assert len(CheckpointManager("checkpoints").list_checkpoints()) == 1  # nothing deleted
    code, out, _ = run(capsys, "checkpoints", "clean", "--yes")
    assert code == 0 and "deleted 1 checkpoint(s)" in out
    assert CheckpointManager("checkpoints").list_checkpoints() == []
    code, _, err = run(capsys, "checkpoints", "show", "nothing-here")
    assert code == 2 and "no checkpoint named 'nothing-here'" in err


def test_checkpoints_list_elsewhere_says_where_it_looked_and_how_to_look_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, _ = run(capsys, "checkpoints", "list")
    assert code == 0
    assert f"no checkpoints in {tmp_path / 'elsewhere' / 'checkpoints'} (" in out
    assert "--checkpoint-dir" in out


def test_costs_keep_every_paid_call_after_cleaning_and_dry_runs_add_nothing(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    common = ["--data-dir", str(data_dir), "--assignment", "midterm"]
    run(capsys, "generate-rubric", *common, "--dry-run")
    code, out, _ = run(capsys, "costs")
    assert code == 0 and "no paid calls recorded" in out
    provider = simulator(announce=False, responder=dry_run_responder)  # stands in for a real one
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("AITA_BASE_URL", provider.base_url)
    monkeypatch.setenv("AITA_MODEL", "openai/gpt-4o-mini")
    get_config.cache_clear()
    code, _, err = run(capsys, "generate-rubric", *common, "--yes")
    assert code == 0, err
    code, before, _ = run(capsys, "costs")
    assert code == 0 and f"({provider.stats.requests} calls;" in before
    assert "generate-rubric" in before and "openai/gpt-4o-mini" in before and "total: $" in before
    run(capsys, "checkpoints", "clean", "--yes")
    run(capsys, "generate-rubric", *common, "--dry-run", "--force")
    code, after, _ = run(capsys, "costs")
    assert after == before


def test_ctrl_c_during_generate_rubric_saves_and_the_rerun_redoes_only_the_rest(
    data_dir: Path, tmp_path: Path
) -> None:
    args = ["generate-rubric", "--data-dir", str(data_dir), "--assignment", "midterm", "--dry-run"]
    env = {**os.environ, "AITA_DRY_RUN_LATENCY": "0.3", "AITA_MAX_WORKERS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aita", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    keys = results(data_dir) / "answer_keys.json"
    deadline = time.monotonic() + 60
    while not (keys.exists() and len(json.loads(keys.read_text())) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "resume with: aita generate-rubric" in err and "Traceback" not in err
    assert "checkpoint_name" not in err  # the Python hint is for Python callers
    done_before = len(json.loads(keys.read_text()))
    rubrics_file = results(data_dir) / "rubrics.json"
    done_before += len(json.loads(rubrics_file.read_text())) - 1 if rubrics_file.exists() else 0
    again = aita(*args)
    assert again.returncode == 0, again.stderr
    assert f"{done_before} reused" in again.stdout
    assert f"calls: {19 - done_before} " in again.stdout
    assert len(json.loads(rubrics_file.read_text())) == 10
