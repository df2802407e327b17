"""Answers a model should not give, given anyway: a grade whose points are not a number is a
parse failure that is asked again, never a ``null`` in the grades that nothing reads back."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from aita.cli import main
from aita.config import get_config
from aita.pipelines.dry_run import dry_run_responder
from aita.pipelines.tasks import GradingTask
from tests.pipelines.test_pipelines import grading_task
from tests.support.doubles import TEST_KEY, SimulatorFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"


@pytest.mark.parametrize("value", ['"NaN"', "NaN", '"Infinity"', '"-inf"', "1e999"])
def test_a_points_value_that_is_not_a_finite_number_is_a_parse_failure(value: str) -> None:
    task: GradingTask = grading_task()
    answer = '{"scores": [{"criterion": 1, "points_awarded": VALUE}], "feedback": ""}'.replace(
        "VALUE", value
    )
    with pytest.raises(ValueError, match="points_awarded: not a finite number"):
        task.parse_response(answer)


def test_a_nan_grade_is_asked_again_and_every_command_reads_what_grade_wrote(
    simulator: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nan_sent: set[str] = set()

    def respond(request: dict[str, Any]) -> str | None:
        answer = dry_run_responder(request)
        fmt = request.get("response_format") or {}
        if (fmt.get("json_schema") or {}).get("name") != "GradeContent" or answer is None:
            return answer
        prompt = request["messages"][-1]["content"]
        if prompt in nan_sent:
            return answer
        nan_sent.add(prompt)  # the first answer to each grading prompt: points "NaN"
        scores = [dict(s, points_awarded="NaN") for s in json.loads(answer)["scores"]]
        return json.dumps({"scores": scores, "feedback": "ok"})

    sim = simulator(announce=False, responder=respond)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MODEL", "sim/unpriced")
    get_config.cache_clear()
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    args = ["--data-dir", str(tmp_path / "data"), "--assignment", "midterm", "--yes"]
    assert main(["generate-rubric", *args]) == 0, capsys.readouterr().err
    for command in ("transcribe", "grade"):
        assert main([command, *args, "--student", "bob"]) == 0, capsys.readouterr().err
    assert nan_sent  # the NaN answers were given, and asked again
    grades = json.loads(
        (tmp_path / "data" / "midterm" / "results" / "grades" / "bob.json").read_text()
    )
    points = [g["points_awarded"] for g in grades.values()]
    assert points and all(isinstance(p, int | float) and math.isfinite(p) for p in points)
    assert main(["grade", *args, "--student", "bob"]) == 0, capsys.readouterr().err
    assert main(["report", "--data-dir", str(tmp_path / "data"), "--assignment", "midterm"]) == 0


def test_with_v_the_answer_that_did_not_parse_is_shown(
    simulator: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def respond(request: dict[str, Any]) -> str | None:
        fmt = request.get("response_format") or {}
        if (fmt.get("json_schema") or {}).get("name") == "RubricContent":
            return "Sure! Here is the rubric you asked for: \x1b[31mcriteria\x1b[0m"
        return dry_run_responder(request)

    sim = simulator(announce=False, responder=respond)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MODEL", "sim/unpriced")
    monkeypatch.setenv("AITA_MAX_RETRIES", "0")
    get_config.cache_clear()
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    args = ["generate-rubric", "--data-dir", str(tmp_path / "data"), "--assignment", "midterm"]
    assert main([*args, "--yes"]) == 1
    assert "Here is the rubric" not in capsys.readouterr().err  # only with -v
    assert main(["-v", *args, "--yes", "--force"]) == 1
    err = capsys.readouterr().err
    assert "the answer that did not parse: Sure! Here is the rubric you asked for: criteria" in err
    assert "\x1b" not in err
