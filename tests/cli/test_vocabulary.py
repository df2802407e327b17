"""One vocabulary everywhere: a command's end-of-run line, ``aita checkpoints list|show`` and
the result files count the same run the same way (done, flagged, failed, skipped, cancelled,
reused)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from aita.cli import main
from aita.config import get_config
from aita.engine import (
    BadRequest,
    CheckpointManager,
    LLMMessage,
    LLMResponse,
    ParallelLLMExecutor,
    SimpleLLMTask,
    Tally,
    Usage,
    outcome_of,
    outcome_of_record,
)
from aita.pipelines.dry_run import dry_run_responder
from tests.support.doubles import SimulatorFactory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "midterm"
NOTES = ROOT / "examples" / "course" / "notes.md"
STUDY_GUIDE = ROOT / "examples" / "pipelines" / "study_guide.yaml"
TALLY = re.compile(r"(\d+) (?:tasks|steps): ((?:\d+ [a-z]+(?:, )?)+)")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def counts(line: str) -> dict[str, int]:
    """``19 tasks: 10 done, 9 flagged, 0 failed`` -> {"done": 10, "flagged": 9}"""
    match = TALLY.search(line)
    assert match, line
    found = {word: int(n) for n, word in re.findall(r"(\d+) ([a-z]+)", match.group(2))}
    assert sum(found.values()) == int(match.group(1))
    return {word: n for word, n in found.items() if n}


def checkpoint_counts(capsys: pytest.CaptureFixture[str], *names: str) -> dict[str, int]:
    """What ``aita checkpoints list`` says of these batches, added up."""
    total: dict[str, int] = {}
    code, out, _ = run(capsys, "checkpoints", "list")
    assert code == 0
    for name in names:
        [line] = [line for line in out.splitlines() if f": {name}, " in line]
        for word, n in counts(line).items():
            total[word] = total.get(word, 0) + n
    return total


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    return tmp_path / "data"


def read(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_each_command_its_checkpoint_and_its_result_files_agree(
    data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--dry-run"]
    results = data_dir / "midterm" / "results" / "dry-run"

    code, out, _ = run(capsys, "generate-rubric", *common)
    assert code == 0
    said = counts(out)
    assert said == checkpoint_counts(capsys, "midterm__dry-run__generate-rubric") == {"done": 19}
    rubrics, keys = read(results / "rubrics.json"), read(results / "answer_keys.json")
    made = [r for r in rubrics.values() if r["source"] != "instructor"] + list(keys.values())
    assert len(made) == said["done"]
    assert sum(r["source"] == "fallback" for r in made) == said.get("flagged", 0)

    code, out, _ = run(capsys, "transcribe", *common)
    assert code == 0
    said = counts(out)
    assert said == checkpoint_counts(capsys, "midterm__dry-run__transcribe") == {"done": 12}
    assert len(list((results / "transcriptions").rglob("page_*.json"))) == said["done"]

    code, out, _ = run(capsys, "grade", *common)
    assert code == 0
    said = counts(out)
    assert said == checkpoint_counts(capsys, "midterm__dry-run__grade")
    graded = [g for f in (results / "grades").glob("[!s]*.json") for g in read(f).values()]
    assert sum(bool(g["inputs_hash"]) for g in graded) == said["done"]  # blanks need no call

    code, out, _ = run(
        capsys, "generate-course", "--content", str(NOTES), "--title", "T", "--dry-run"
    )
    assert code == 0
    said = counts(out)
    assert said == checkpoint_counts(capsys, "T__outline", "T__chapters")
    chapters = list((Path("courses") / "T").glob("chapter_*.md"))
    assert said == {"done": 1 + len(chapters) + 1}  # outline, chapters, summary

    output = tmp_path / "guide.json"
    code, out, _ = run(
        capsys, "run", str(STUDY_GUIDE), "--input", "cells", "--dry-run", "--output", str(output)
    )
    assert code == 0
    said = counts(out)
    [name] = {p.name.rsplit("_", 2)[0] for p in Path("checkpoints").glob("*__run_*")}
    assert said == checkpoint_counts(capsys, name) == {"done": 6}
    assert dict(Tally(s["status"] for s in read(output)["steps"].values())) == said


def bad_rubrics(request: dict[str, Any]) -> str | None:
    """Rubrics whose criteria never add up to the question's points: each falls back."""
    fmt = request.get("response_format") or {}
    if (fmt.get("json_schema") or {}).get("name") == "RubricContent":
        return json.dumps({"criteria": [{"description": "x", "points": 0.5, "examples": []}]})
    return dry_run_responder(request)


def test_fallback_rubrics_are_flagged_in_the_end_line_and_the_result_file(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = simulator(announce=False, responder=bad_rubrics)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MAX_RETRIES", "0")
    get_config.cache_clear()
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--yes"]
    code, out, _ = run(capsys, "generate-rubric", *common)
    assert code == 1  # flagged for review, and a fallback is no answer: the next run asks again
    assert counts(out) == {"done": 10, "flagged": 9}
    assert "9 tasks got no usable answer and a fallback stands in" in out
    assert "9 flagged for review" in out and "review these rubrics:" in out
    rubrics = json.loads((data_dir / "midterm" / "results" / "rubrics.json").read_text())
    assert sum(r["source"] == "fallback" for r in rubrics.values()) == 9


def test_fallback_rubrics_are_flagged_in_checkpoints_list_too(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = simulator(announce=False, responder=bad_rubrics)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MAX_RETRIES", "0")
    get_config.cache_clear()
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--yes"]
    _, out, _ = run(capsys, "generate-rubric", *common)
    assert checkpoint_counts(capsys, "midterm__generate-rubric") == counts(out)


def test_truncated_and_skipped_steps_agree_in_line_results_and_checkpoint(
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sim = simulator(announce=False, models=frozenset({"sim/echo"}))
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MODEL", "sim/echo")
    get_config.cache_clear()
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "settings: {parallel: true}\n"
        "steps:\n"
        "  - type: parallel_group\n"
        "    fail_fast: false\n"
        "    steps:\n"
        "      - {name: short, type: text, params: {prompt: a long enough prompt, max_tokens: 1}}\n"
        "      - {name: broken, type: text, model: sim/missing, params: {prompt: hi}}\n"
        "      - {name: fine, type: text, params: {prompt: hi}}\n"
        "  - {name: after_broken, type: text, input_from: broken}\n"
        "  - {name: after_fine, type: text, input_from: fine}\n"
    )
    output = tmp_path / "o.json"
    code, out, err = run(capsys, "run", str(pipeline), "--yes", "--output", str(output))
    assert code == 1
    said = counts(out)
    assert said == {"done": 2, "flagged": 1, "failed": 1, "skipped": 1}
    assert (
        dict(Tally(s["status"] for s in json.loads(output.read_text())["steps"].values())) == said
    )
    [name] = {p.name.rsplit("_", 2)[0] for p in Path("checkpoints").glob("*__run_*")}
    assert checkpoint_counts(capsys, name) == said
    code, shown, _ = run(capsys, "checkpoints", "show", name)
    assert "flagged short: the answer was cut off at the token limit" in shown
    assert "failed broken:" in shown and "skipped after_broken: 'broken' has no output" in shown
    assert "skipped after_broken: 'broken' has no output" in err


class ScriptedClient:
    """Answers by prompt: ``cut`` is cut off at the token limit, ``bad`` is refused."""

    model = "scripted"

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        text = str(messages[-1].content)
        if text.startswith("bad"):
            raise BadRequest("refused", status_code=400)
        finish = "length" if text.startswith("cut") else "stop"
        return LLMResponse(text, Usage(1, 1, 2), "scripted", finish_reason=finish)


class WithFallback(SimpleLLMTask):
    def fallback(self, error: Exception) -> str:
        return "stand-in"


def test_a_result_and_its_journal_record_have_the_same_outcome(tmp_path: Path) -> None:
    tasks = [
        SimpleLLMTask("done", "fine"),
        SimpleLLMTask("cut", "cut here"),
        WithFallback("fell_back", "bad, with a fallback"),
        SimpleLLMTask("failed", "bad"),
        SimpleLLMTask("skipped", "fine", dependencies=["failed"]),
    ]
    executor = ParallelLLMExecutor(
        ScriptedClient(), max_workers=1, max_retries=0, checkpoint_dir=tmp_path, rate_limit=None
    )
    batch = executor.execute_batch(tasks, checkpoint_name="outcomes")
    said = {r.task_id: outcome_of(r) for r in batch.task_results}
    assert said == {
        "done": "done",
        "cut": "flagged",
        "fell_back": "flagged",
        "failed": "failed",
        "skipped": "skipped",
    }
    assert batch.checkpoint_path is not None
    records = CheckpointManager(tmp_path).load(batch.checkpoint_path).records
    kept = {task_id: outcome_of_record(record) for task_id, record in records.items()}
    if not hasattr(records["fell_back"], "used_fallback"):
        assert kept.pop("fell_back") == "failed"  # until the journal records fallbacks
        said.pop("fell_back")
    assert kept == said
    again = executor.execute_batch(tasks, checkpoint_name="outcomes")
    assert outcome_of(again.task_results[0]) == "reused"


def test_cancelled_tasks_are_cancelled_in_the_journal_too(tmp_path: Path) -> None:
    tasks = [SimpleLLMTask("first", "bad"), SimpleLLMTask("second", "fine")]
    executor = ParallelLLMExecutor(
        ScriptedClient(), max_workers=1, max_retries=0, checkpoint_dir=tmp_path, rate_limit=None
    )
    batch = executor.execute_batch(tasks, checkpoint_name="stop", fail_fast=True)
    assert [outcome_of(r) for r in batch.task_results] == ["failed", "cancelled"]
    assert batch.checkpoint_path is not None
    records = CheckpointManager(tmp_path).load(batch.checkpoint_path).records
    assert [outcome_of_record(records[t.task_id]) for t in tasks] == ["failed", "cancelled"]
