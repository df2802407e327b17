"""``aita generate-course`` and ``aita run``: the workflows from the other guides."""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aita.cli._options import check_output_dir, check_output_file, client_of, options_of
from aita.cli._parsers import Commands, add_command, run_options
from aita.cli._summary import EXIT_FAILED, EXIT_OK, calls_line, info, report
from aita.cli._types import positive_int
from aita.config import get_config
from aita.engine import BatchResult, LLMTask, Tally, TaskResult
from aita.errors import AitaError
from aita.files import safe_filename, write_json_atomic
from aita.pipelines.execution import check_spend, run_batch
from aita.terminal import printable
from aita.workflows.course import generate_course
from aita.workflows.yaml_pipeline import (
    load_pipeline,
    pipeline_input_variable,
    run_pipeline,
    stage_tasks,
)


def register(commands: Commands) -> None:
    course = add_command(
        commands,
        "generate-course",
        parents=[run_options()],
        help="a course from notes: outline, chapters in parallel, summary",
        description="An outline call, then every chapter in parallel (each saved as soon as it "
        "is done), then a course summary. Run it again to finish an interrupted course: "
        "finished calls are reused.",
        examples=[
            'aita generate-course --content notes.md --title "LLM at Scale" --dry-run',
            'aita generate-course --content notes.md --title "LLM at Scale" --chapters 5 '
            "--output-dir courses --model openai/gpt-4o-mini",
        ],
    )
    course.add_argument(
        "--content", type=Path, required=True, metavar="FILE", help="the notes (text/markdown)"
    )
    course.add_argument(
        "--title", required=True, metavar="TEXT", help="course title (also its folder name)"
    )
    course.add_argument(
        "--output-dir",
        type=Path,
        default=Path("courses"),
        metavar="DIR",
        help="where the course folder goes",
    )
    course.add_argument(
        "--chapters", type=positive_int, default=8, metavar="N", help="at most this many"
    )
    course.add_argument(
        "--instructions", metavar="TEXT", help="extra instructions for every chapter"
    )
    course.add_argument(
        "--no-resume", action="store_true", help="do not reuse calls of an earlier run"
    )
    course.set_defaults(handler=_generate_course)

    run = add_command(
        commands,
        "run",
        parents=[run_options()],
        help="run a YAML pipeline of LLM steps",
        description="Run a YAML pipeline: steps in order, parallel groups together. Every "
        "finished step is kept: run the same command again after Ctrl-C or a failure and only "
        "the steps that did not finish (or whose inputs changed) call the model.",
        examples=[
            'aita run examples/pipelines/study_guide.yaml --input "photosynthesis" --dry-run',
            "aita run guide.yaml --input cells --output out/guide.json --model openai/gpt-4o",
            "aita run guide.yaml -q --yes   # only the result line and errors",
        ],
    )
    run.add_argument("pipeline", type=Path, help="the pipeline YAML file")
    run.add_argument(
        "--input",
        metavar="TEXT",
        help="text for {{input}} and {{pipeline_input}} (required when a step uses them)",
    )
    run.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="results JSON (default: <pipeline name>.results.json)",
    )
    run.add_argument(
        "--no-resume", action="store_true", help="run every step again, reusing nothing"
    )
    run.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let steps read files outside the pipeline's folder",
    )
    run.set_defaults(handler=_run_pipeline)


def _generate_course(args: argparse.Namespace) -> int:
    content = _read_notes(args.content)
    check_output_dir(args.output_dir)
    options = options_of(args)
    with client_of(options) as client:

        def run(
            tasks: Sequence[LLMTask], name: str, done: Callable[[TaskResult], object] | None
        ) -> BatchResult:
            return run_batch(tasks, client, options, name, done)

        outcome = generate_course(
            content, args.title, args.output_dir, run, args.chapters, args.instructions
        )
    chapters = len(outcome.outline.chapters) if outcome.outline else 0
    print(f"{len(outcome.chapter_files)}/{chapters} chapters written to {outcome.course_dir}")
    for path in outcome.chapter_files:
        info(f"  {path.name}")
    if outcome.summary_file:
        info(f"  {outcome.summary_file.name}")
    return report(outcome.batches)


def _read_notes(path: Path) -> str:
    try:
        if path.exists() and not path.is_file():
            raise AitaError(f"{path}: not a regular file")
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AitaError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AitaError(f"{path}: cannot read ({error})") from None
    if not content.strip():
        raise AitaError(f"{path}: the notes are empty")
    return content


def _run_pipeline(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(args.pipeline, allow_outside_paths=args.allow_outside_paths)
    variable = pipeline_input_variable(pipeline)
    if args.input is None and variable:  # --input "" is asked for; a forgotten one is not
        raise AitaError(f"{args.pipeline} uses {{{{{variable}}}}}: give --input TEXT")
    text = args.input or ""
    output = args.output or Path(
        f"{safe_filename(pipeline.name, limit=60, empty='pipeline')}.results.json"
    )
    check_output_file(output, "results file")
    if args.model:  # the command line's model replaces the file's default, not a step's own
        pipeline.settings.model = args.model
    configured = get_config().pipeline_parallel_enabled
    parallel = configured if configured is not None else bool(pipeline.settings.parallel)
    options = options_of(args)
    options.model = pipeline.settings.model
    with client_of(options) as client:
        every_step = [t for stage in pipeline.stages for t in stage_tasks(pipeline, stage, {}, "")]
        check_spend(every_step, client, options)
        run = run_pipeline(
            pipeline,
            client,
            text,
            parallel=parallel,
            max_workers=args.workers,
            rate_limit=args.rate_limit,  # given, it paces a dry run too
            checkpoint_name=pipeline_checkpoint_name(args.pipeline, options.dry_run),
            resume=not args.no_resume,
            cache=options.cache,
        )
    write_json_atomic(output, run.to_json(text))
    tally = Tally(record.status for record in run.steps.values())
    print(
        f"{printable(pipeline.name)}: {tally.describe('steps')} in {run.total_duration:.2f}s "
        f"({run.timing()})"
    )
    for name, record in run.steps.items():
        if not record.has_output:
            reason = printable(record.error or "no reason given")
            reason = reason.removeprefix(f"{record.status}: ")
            print(f"{record.status} {printable(name)}: {reason}", file=sys.stderr)
    if run.batches:
        info(calls_line([batch.metrics for batch in run.batches]))
    info(f"results written to {output}")
    return EXIT_OK if run.succeeded else EXIT_FAILED


def pipeline_checkpoint_name(path: Path, dry_run: bool) -> str:
    """The journal of one pipeline file (by its resolved path), a dry run's apart from a real
    run's: ``study_guide-1a2b3c4d5e__run`` (``run`` is the operation ``aita costs`` shows). A
    step is answered from it only for the same request, so another ``--input`` or an edited
    step runs again."""
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"{safe_filename(path.stem, limit=40, empty='pipeline')}-{where}"
    return f"{name}__dry-run__run" if dry_run else f"{name}__run"
