"""``aita generate-course`` and ``aita run``: the workflows from the other guides."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aita.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    cost_text,
    options_of,
    positive_int,
    report,
    run_options,
)
from aita.config import get_config
from aita.engine import BatchResult, LLMTask, TaskResult
from aita.errors import AitaError
from aita.files import safe_filename, write_json_atomic
from aita.pipelines.execution import check_spend, open_client, run_batch
from aita.workflows.course import generate_course
from aita.workflows.yaml_pipeline import load_pipeline, run_pipeline, stage_tasks


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    course = commands.add_parser(
        "generate-course",
        parents=[run_options()],
        help="a course from notes: outline, chapters in parallel, summary",
        description="An outline call, then every chapter in parallel (each saved as soon as it "
        "is done), then a course summary.",
    )
    course.add_argument("--content", type=Path, required=True, help="the notes (text/markdown)")
    course.add_argument("--title", required=True, help="course title (also its folder name)")
    course.add_argument("--output-dir", type=Path, default=Path("courses"))
    course.add_argument("--chapters", type=positive_int, default=8, help="at most this many")
    course.add_argument("--instructions", help="extra instructions for every chapter")
    course.set_defaults(handler=_generate_course)

    run = commands.add_parser(
        "run",
        parents=[run_options()],
        help="run a YAML pipeline of LLM steps",
        description="Run a YAML pipeline: steps in order, parallel groups together.",
    )
    run.add_argument("pipeline", type=Path, help="the pipeline YAML file")
    run.add_argument("--input", default="", help="text for {{input}}")
    run.add_argument(
        "--output", type=Path, help="results JSON (default: <pipeline name>.results.json)"
    )
    run.set_defaults(handler=_run_pipeline)


def _generate_course(args: argparse.Namespace) -> int:
    try:
        content = args.content.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AitaError(f"{args.content}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AitaError(f"{args.content}: cannot read ({error})") from None
    if not content.strip():
        raise AitaError(f"{args.content}: the notes are empty")
    options = options_of(args)
    with open_client(options) as client:

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
        print(f"  {path.name}")
    if outcome.summary_file:
        print(f"  {outcome.summary_file.name}")
    metrics = [b.metrics for b in outcome.batches]
    cost = cost_text(
        sum(m.total_cost for m in metrics),
        sum(m.unpriced_requests for m in metrics),
        sum(m.simulated_requests for m in metrics),
    )
    print(f"calls: {sum(m.requests for m in metrics)}, cost: {cost}")
    return report(None, outcome.failed)


def _run_pipeline(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(args.pipeline)
    configured = get_config().pipeline_parallel_enabled
    parallel = configured if configured is not None else bool(pipeline.settings.parallel)
    options = options_of(args)
    with open_client(options) as client:
        every_step = [t for stage in pipeline.stages for t in stage_tasks(pipeline, stage, {}, "")]
        check_spend(every_step, client, options)
        run = run_pipeline(
            pipeline,
            client,
            args.input,
            parallel=parallel,
            report=lambda line: print(line, file=sys.stderr, flush=True),
            max_workers=args.workers,
            rate_limit=None if options.dry_run else args.rate_limit,
        )
    output = args.output or Path(
        f"{safe_filename(pipeline.name, limit=60, empty='pipeline')}.results.json"
    )
    write_json_atomic(output, run.to_json(args.input))
    print(
        f"{pipeline.name}: {sum(r.status == 'succeeded' for r in run.steps.values())}/"
        f"{len(run.steps)} steps succeeded in {run.total_duration:.2f}s "
        f"(sequential estimate {run.sequential_estimate:.2f}s, speedup {run.speedup:.2f}x)"
    )
    for name, record in run.steps.items():
        if record.status != "succeeded":
            print(f"{name}: {record.status}: {record.error}", file=sys.stderr)
    print(f"results written to {output}")
    return EXIT_OK if run.succeeded else EXIT_FAILED
