"""Teaching-assistant results record where they came from and are reused only for the same call.

A dry run never stands in for a real run; an edited question redoes its own key, rubric and
grades and leaves every other record as it was, byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from aita.cli import main
from aita.config import get_config
from aita.pipelines.dry_run import dry_run_responder
from tests.support.doubles import SimulatorFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"
COMMANDS = ("generate-rubric", "transcribe", "grade")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    return tmp_path / "data"


def provider_answers(request: dict[str, Any]) -> str | None:
    """A stand-in for a real provider: answers in kind, in its own words."""
    answer = dry_run_responder(request)
    return answer.replace("[dry run]", "[provider]") if answer is not None else None


def real_files(results: Path) -> list[Path]:
    return [p for p in results.rglob("*.json") if "dry-run" not in p.relative_to(results).parts]


def test_a_real_run_after_a_dry_run_calls_the_provider_for_everything(
    data_dir: Path,
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--data-dir", str(data_dir), "--assignment", "midterm"]
    for command in COMMANDS:
        assert main([command, *common, "--dry-run"]) == 0
    provider = simulator(announce=False, responder=provider_answers)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("AITA_BASE_URL", provider.base_url)
    get_config.cache_clear()
    expected_calls = {"generate-rubric": 19}
    for command in COMMANDS:
        before = provider.stats.requests
        capsys.readouterr()
        assert main([command, *common, "--yes"]) == 0, capsys.readouterr().err
        calls = provider.stats.requests - before
        if command == "transcribe":
            assert calls == sum(1 for _ in (data_dir / "midterm" / "submissions").rglob("*.png"))
        elif command == "grade":  # blank answers need no call
            answered = [
                a
                for f in (data_dir / "midterm" / "results" / "transcriptions").rglob("answers.json")
                for a in json.loads(f.read_text()).values()
                if a["text"].strip()
            ]
            assert calls == len(answered) > 0
        else:
            assert calls == expected_calls[command]
    results = data_dir / "midterm" / "results"
    files = real_files(results)
    assert files and all(b"[dry run]" not in p.read_bytes() for p in files)
    records = [
        record
        for p in files
        if p.name not in {"answers.json", "summary.json"}
        for record in _records(json.loads(p.read_text()))
    ]
    assert records and all(r.get("simulated") is False for r in records)
    made = [r for r in records if r.get("source") != "instructor" and "inputs_hash" in r]
    assert all(r["inputs_hash"] and r["model"] for r in made if r.get("feedback") != BLANK)
    assert (results / "dry-run" / "rubrics.json").exists()  # the dry run's stay apart


BLANK = "No answer was found on the scanned pages."


def _records(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A page file is one record; the other result files map ids to records."""
    return [data] if "text" in data and "page" in data else list(data.values())


def test_raising_one_questions_points_redoes_only_that_question(
    data_dir: Path, simulator: SimulatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--dry-run"]
    for command in COMMANDS:
        assert main([command, *common]) == 0
    results = data_dir / "midterm" / "results" / "dry-run"
    before = {p: p.read_bytes() for p in results.rglob("*.json")}
    spec_file = data_dir / "midterm" / "exam_spec.json"
    spec = json.loads(spec_file.read_text())
    changed = next(q for q in spec["questions"] if q["question_id"] == "3")
    changed["points"] += 2
    spec["total_points"] += 2
    spec_file.write_text(json.dumps(spec))

    capsys.readouterr()
    assert main(["generate-rubric", *common]) == 0
    out = capsys.readouterr().out
    assert "calls: 2 " in out and "17 reused" in out
    assert main(["transcribe", *common]) == 0
    assert "calls:" not in capsys.readouterr().out  # transcriptions do not depend on points
    assert main(["grade", *common]) == 0
    assert "calls: 3 " in capsys.readouterr().out  # question 3, once per student

    rubrics = json.loads((results / "rubrics.json").read_text())
    assert sum(c["points"] for c in rubrics["3"]["criteria"]) == changed["points"]
    for path, old_bytes in before.items():
        if path.name == "summary.json":
            continue  # totals change with question 3's points
        new, old = json.loads(path.read_bytes()), json.loads(old_bytes)
        if path.name in {"answer_keys.json", "rubrics.json"} or path.parent.name == "grades":
            assert new.keys() == old.keys()
            for qid in old:
                if qid == "3":
                    assert new[qid] != old[qid], (path.name, qid)
                else:
                    assert json.dumps(new[qid]) == json.dumps(old[qid]), (path.name, qid)
        else:
            assert path.read_bytes() == old_bytes, path
