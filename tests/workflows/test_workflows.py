"""Course generation and YAML pipelines, through the CLI and against the simulator."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aita.cli import main
from aita.files import safe_filename
from aita.pipelines.execution import RunOptions, run_batch
from aita.workflows.course import generate_course
from aita.workflows.yaml_pipeline import PipelineError, load_pipeline, run_pipeline
from tests.support.doubles import PNG_1PX, SimulatorFactory, client_for

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "examples" / "course" / "notes.md"
STUDY_GUIDE = ROOT / "examples" / "pipelines" / "study_guide.yaml"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- course generation -------------------------------------------------------------------------


def test_generate_course_writes_chapters_inside_the_output_dir_whatever_the_title(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_dir = tmp_path / "courses"
    code, out, _ = run(
        capsys,
        "generate-course",
        "--content",
        str(NOTES),
        "--title",
        "../x",
        "--output-dir",
        str(out_dir),
        "--dry-run",
    )
    assert code == 0, out
    chapters = sorted((out_dir / "x").glob("chapter_*.md"))
    assert len(chapters) >= 2
    assert chapters[0].name == "chapter_01_Notes_running_LLM_calls_at_scale.md"
    assert "## Summary" in chapters[0].read_text() and "## Extension" in chapters[0].read_text()
    assert (out_dir / "x" / "course_summary.md").exists()
    assert not (tmp_path / "x").exists()
    assert all(p.resolve().is_relative_to(out_dir.resolve()) for p in tmp_path.rglob("*.md"))


def test_chapter_titles_from_the_model_cannot_escape(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    def hostile_outline(request: dict[str, Any]) -> str | None:
        if request["response_format"]["json_schema"]["name"] == "CourseOutline":
            titles = ["../../etc/passwd", "a/b\\c", "   ", "Ünïcödé Title"]
            return json.dumps({"chapters": [{"title": t, "focus": ""} for t in titles]})
        return None

    sim = simulator(responder=hostile_outline)
    client = client_for(sim)
    options = RunOptions(show_progress=False)
    outcome = generate_course(
        "notes",
        "/abs/../../course",
        tmp_path / "out",
        lambda tasks, name, done: run_batch(tasks, client, options, name, done),
    )
    names = sorted(p.name for p in outcome.chapter_files)
    assert names == [
        "chapter_01_etc_passwd.md",
        "chapter_02_a_b_c.md",
        "chapter_03_untitled.md",
        "chapter_04_Unicode_Title.md",
    ]
    assert outcome.course_dir == tmp_path / "out" / "abs_course"
    assert all(p.parent == outcome.course_dir for p in outcome.chapter_files)


@pytest.mark.parametrize(
    ("title", "safe"),
    [("../x", "x"), ("", "untitled"), ("C++ & Go: 101", "C_Go_101"), ("..", "untitled")],
)
def test_titles_become_safe_file_names(title: str, safe: str) -> None:
    assert safe_filename(title, limit=60, empty="untitled") == safe


def test_missing_notes_file_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(
        capsys,
        "generate-course",
        "--content",
        str(tmp_path / "none.md"),
        "--title",
        "T",
        "--dry-run",
    )
    assert code == 2 and "none.md: file not found" in err


# -- YAML pipelines ----------------------------------------------------------------------------


def test_example_pipeline_runs_in_parallel_and_reports_its_speedup(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Calls long enough that the parallel group's overlap shows whatever else the machine does.
    monkeypatch.setenv("AITA_DRY_RUN_LATENCY", "0.25")
    from aita.config import get_config

    get_config.cache_clear()
    output = tmp_path / "results.json"
    code, out, err = run(
        capsys,
        "run",
        str(STUDY_GUIDE),
        "--input",
        "photosynthesis",
        "--dry-run",
        "--output",
        str(output),
    )
    assert code == 0, err
    assert "[INFO] Starting parallel group 'materials' with 4 steps" in err
    assert "[INFO] [4/4] Started:" in err and "Parallel group completed in" in err
    assert "6 steps: 6 done, 0 failed" in out and "speedup" in out
    results = json.loads(output.read_text())
    assert results["succeeded"] and results["speedup"] > 1.0
    assert "photosynthesis" in results["steps"]["outline"]["output"]
    assert results["steps"]["summary"]["output"].startswith("[sim] Summarise this outline")
    assert "[sim] Write five multiple-choice" in results["steps"]["review"]["output"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    return path


CYCLE = """
    steps:
      - type: parallel_group
        name: loop
        steps:
          - {name: a, type: text, input_from: b}
          - {name: b, type: text, input_from: a}
"""


def test_cyclic_pipeline_exits_non_zero_naming_the_steps(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "run", str(write(tmp_path, CYCLE)), "--dry-run")
    assert code == 2
    assert err.strip().endswith("dependency cycle: a -> b -> a") or "cycle: b -> a -> b" in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("steps: [{name: s1, type: text}]", "step 's1': params.prompt: required"),
        (
            "steps: [{name: s1, type: text_to_image, params: {prompt: p}}]",
            "step 's1': type: unsupported step type 'text_to_image'",
        ),
        (
            "steps: [{name: s1, type: text, prompt: p}]",
            "step 's1': prompt: Extra inputs are not permitted",
        ),
        (
            "steps: [{type: parallel_group, name: g, max_workers: 0, steps: [{name: a}]}]",
            "step 'g': max_workers: Input should be greater than or equal to 1",
        ),
        (
            "steps: [{type: parallel_group, name: g, steps: [{name: a, type: text, params: {}}]}]",
            "step 'a': params.prompt: required",
        ),
        (
            "steps: [{type: parallel_group, name: g, steps: [{name: a, type: text}, {type: x}]}]",
            "step 'g' > step #2: name: Field required",
        ),
        (
            "steps: [{name: a, type: text, input_from: ghost}]",
            "step 'a': refers to unknown step 'ghost'",
        ),
        (
            "steps: [{name: a, type: text, input_from: b}, {name: b, type: text, input_from: a}]",
            "step 'a': refers to 'b', which runs later",
        ),
        (
            "steps: [{name: a, type: text, params: {prompt: '{{nope}}'}}]",
            "unknown template variable(s) nope",
        ),
        (
            "steps: [{name: a, type: vision, params: {prompt: p}}]",
            "step 'a': params.image: required",
        ),
        (
            "steps: [{name: a, type: text, input_from: a}, {name: a, type: text, input_from: a}]",
            "step 'a': name: used by another step",
        ),
        (
            "settings: {max_workers: many}\nsteps: [{name: a, type: text, params: {prompt: p}}]",
            "settings: max_workers: Input should be a valid integer",
        ),
        ("steps: [{name: a, type: text, params: {prompt: p}}\n  oops: [", "invalid YAML at line"),
        ("steps: []", "steps: a non-empty list is required"),
    ],
)
def test_schema_errors_name_the_step_and_the_field(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(write(tmp_path, body))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


GROUP = """
    settings: {{parallel: {parallel}, max_workers: 4}}
    steps:
      - type: parallel_group
        name: g
        fail_fast: {fail_fast}
        max_workers: {workers}
        steps:
          - {{name: a, type: text, model: {model_a}, params: {{prompt: "A {{{{input}}}}"}}}}
          - {{name: b, type: text, params: {{prompt: "B"}}}}
          - {{name: c, type: text, params: {{prompt: "C"}}}}
      - {{name: after_a, type: text, input_from: a}}
      - {{name: after_b, type: text, input_from: b}}
"""


def group_pipeline(
    tmp_path: Path,
    parallel: bool = True,
    fail_fast: bool = True,
    workers: int = 3,
    model_a: str = "sim/ok",
) -> Path:
    return write(
        tmp_path,
        GROUP.format(
            parallel=str(parallel).lower(),
            fail_fast=str(fail_fast).lower(),
            workers=workers,
            model_a=model_a,
        ),
    )


def test_group_steps_overlap_only_when_parallel_is_on(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    for parallel, expected in ((True, 3), (False, 1)):
        sim = simulator(latency=0.1)
        pipeline = load_pipeline(group_pipeline(tmp_path, parallel=parallel))
        result = run_pipeline(pipeline, client_for(sim), "x", parallel=parallel)
        assert result.succeeded
        assert sim.stats.max_in_flight == expected


def test_parallel_env_variable_overrides_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_PARALLEL_ENABLED", "true")
    from aita.config import get_config

    get_config.cache_clear()
    code, _, err = run(
        capsys, "run", str(group_pipeline(tmp_path, parallel=False)), "--input", "x", "--dry-run"
    )
    assert code == 0 and "Starting parallel group 'g'" in err


def test_fail_fast_group_stops_the_pipeline(simulator: SimulatorFactory, tmp_path: Path) -> None:
    sim = simulator(models=frozenset({"sim/ok", "google/gemini-2.5-flash"}))
    pipeline = load_pipeline(group_pipeline(tmp_path, workers=1, model_a="sim/missing"))
    result = run_pipeline(pipeline, client_for(sim), "x", parallel=True)
    status = {name: r.status for name, r in result.steps.items()}
    assert status == {
        "a": "failed",
        "b": "cancelled",
        "c": "cancelled",
        "after_a": "cancelled",
        "after_b": "cancelled",
    }
    assert "does not exist" in (result.steps["a"].error or "")
    assert sim.stats.requests == 1


def test_without_fail_fast_the_rest_goes_on(simulator: SimulatorFactory, tmp_path: Path) -> None:
    sim = simulator(models=frozenset({"sim/ok", "google/gemini-2.5-flash"}))
    pipeline = load_pipeline(group_pipeline(tmp_path, fail_fast=False, model_a="sim/missing"))
    result = run_pipeline(pipeline, client_for(sim), "x", parallel=True)
    status = {name: r.status for name, r in result.steps.items()}
    assert status == {
        "a": "failed",
        "b": "done",
        "c": "done",
        "after_a": "skipped",
        "after_b": "done",
    }
    assert result.steps["after_b"].output == "[sim] [sim] B" and not result.succeeded


def test_vision_step_reads_its_image_next_to_the_pipeline(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    (tmp_path / "scan.png").write_bytes(PNG_1PX)
    path = write(
        tmp_path, "steps: [{name: look, type: vision, params: {image: scan.png, prompt: Read it}}]"
    )
    sim = simulator()
    result = run_pipeline(load_pipeline(path), client_for(sim), parallel=True)
    assert result.steps["look"].output == "[sim] Read it [images: 1]"


def test_example_files_are_valid() -> None:
    pipeline = load_pipeline(STUDY_GUIDE)
    assert [s.label for s in pipeline.stages] == ["outline", "materials", "review"]


def test_course_tasks_accept_json_in_markdown_fences(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    from aita.pipelines.dry_run import dry_run_responder

    sim = simulator(fence_json=True, responder=dry_run_responder)
    client = client_for(sim)
    options = RunOptions(show_progress=False, reuse=False)
    outcome = generate_course(
        "notes on fences",
        "Fenced",
        tmp_path / "out",
        lambda tasks, name, done: run_batch(tasks, client, options, name, done),
        max_chapters=2,
    )
    assert not outcome.failed and outcome.summary_file is not None
    assert len(outcome.chapter_files) == 2
    assert sum(b.metrics.total_retries for b in outcome.batches) == 0  # read at first answer
