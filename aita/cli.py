"""The ``aita`` command line.

Exit codes: 0 all done, 1 some tasks failed (the rest saved), 2 bad input, 130 interrupted
(finished work saved; the same command resumes).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aita.config import get_config
from aita.errors import AitaError
from aita.pipelines.assignment import Assignment, find_assignment, load_assignment
from aita.pipelines.execution import Declined, RunOptions, check_spend, open_client, run_batch
from aita.pipelines.grade import grade
from aita.pipelines.rubric import generate_rubrics
from aita.pipelines.transcribe import transcribe
from aita.services.llm.openrouter import create_openrouter_client
from aita.simulator import ProviderSimulator, SimulatorConfig
from aita.utils.checkpoint import CheckpointManager
from aita.utils.jsonio import write_json_atomic
from aita.utils.llm_tasks import LLMTask, SimpleLLMTask
from aita.utils.parallel_executor import BatchResult, ParallelLLMExecutor, TaskResult
from aita.workflows.course import generate_course, safe_title
from aita.workflows.yaml_pipeline import load_pipeline, run_pipeline, stage_tasks

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger("aita.cli")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _verbose(parser: argparse.ArgumentParser, default: object = False) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log more detail"
    )


def _run_options() -> argparse.ArgumentParser:
    """Options of every command that calls a model."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dry-run", action="store_true", help="use the built-in simulator: no key, no cost"
    )
    common.add_argument("--workers", type=_positive_int, help="parallel calls (AITA_MAX_WORKERS)")
    common.add_argument(
        "--rate-limit", type=_positive_float, help="requests per second (AITA_RATE_LIMIT_RPS)"
    )
    common.add_argument("--yes", action="store_true", help="do not ask before paid calls")
    _verbose(common, default=argparse.SUPPRESS)
    return common


def _assignment_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, parents=[_run_options()])
    common.add_argument("--assignment", required=True, help="assignment folder name (or path)")
    common.add_argument("--data-dir", type=Path, help="where assignments live (AITA_DATA_DIR)")
    common.add_argument(
        "--no-resume", action="store_true", help="do not reuse results of earlier runs"
    )
    common.add_argument("--force", action="store_true", help="redo and overwrite every result")
    return common


def _simulator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-rate-limit",
        type=_positive_float,
        default=None,
        help="requests/s the simulated provider allows (default: unlimited)",
    )
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per response")
    parser.add_argument(
        "--error-rate", type=_probability, default=0.0, help="share of requests answered with 500"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aita", description="Parallel LLM batches and teaching-assistant pipelines."
    )
    _verbose(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _assignment_options()

    commands.add_parser(
        "generate-rubric",
        parents=[common],
        help="answer keys and grading rubrics for every question",
        description="Answer keys, then rubrics built on them; written to results/.",
    )
    for name, text in (
        ("transcribe", "scanned pages to text through a vision model"),
        ("grade", "score transcribed answers against the rubrics"),
    ):
        command = commands.add_parser(name, parents=[common], help=text, description=text)
        command.add_argument("--student", help="only this student (default: all)")

    course = commands.add_parser(
        "generate-course",
        parents=[_run_options()],
        help="a course from notes: outline, chapters in parallel, summary",
        description="An outline call, then every chapter in parallel (each saved as soon as it "
        "is done), then a course summary.",
    )
    course.add_argument("--content", type=Path, required=True, help="the notes (text/markdown)")
    course.add_argument("--title", required=True, help="course title (also its folder name)")
    course.add_argument("--output-dir", type=Path, default=Path("courses"))
    course.add_argument("--chapters", type=_positive_int, default=8, help="at most this many")
    course.add_argument("--instructions", help="extra instructions for every chapter")

    run = commands.add_parser(
        "run",
        parents=[_run_options()],
        help="run a YAML pipeline of LLM steps",
        description="Run a YAML pipeline: steps in order, parallel groups together.",
    )
    run.add_argument("pipeline", type=Path, help="the pipeline YAML file")
    run.add_argument("--input", default="", help="text for {{input}}")
    run.add_argument(
        "--output", type=Path, help="results JSON (default: <pipeline name>.results.json)"
    )

    checkpoints = commands.add_parser("checkpoints", help="list, show or clean checkpoints")
    checkpoints.add_argument("action", choices=["list", "show", "clean"])
    checkpoints.add_argument("name", nargs="?", help="checkpoint name or file (show, clean)")
    checkpoints.add_argument("--checkpoint-dir", type=Path, help="default: AITA_CHECKPOINT_DIR")
    checkpoints.add_argument(
        "--keep", type=int, default=0, help="clean: keep the newest N per name"
    )
    checkpoints.add_argument("--yes", action="store_true", help="clean without asking")
    _verbose(checkpoints, default=argparse.SUPPRESS)

    costs = commands.add_parser("costs", help="what the recorded calls cost, by batch and model")
    costs.add_argument("--checkpoint-dir", type=Path, help="default: AITA_CHECKPOINT_DIR")
    _verbose(costs, default=argparse.SUPPRESS)

    demo = commands.add_parser(
        "demo", help="a batch against the built-in provider simulator (offline, no key)"
    )
    demo.add_argument("--tasks", type=_positive_int, default=200, help="number of tasks")
    demo.add_argument("--workers", type=_positive_int, default=10)
    demo.add_argument(
        "--rate-limit", type=_positive_float, help="client requests/s (default: unlimited)"
    )
    demo.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"))
    demo.add_argument("--no-resume", action="store_true", help="ignore an earlier checkpoint")
    demo.add_argument("--no-progress", action="store_true")
    _simulator_options(demo)
    _verbose(demo, default=argparse.SUPPRESS)

    simulate = commands.add_parser(
        "simulate", help="serve the provider simulator on 127.0.0.1 until Ctrl-C"
    )
    simulate.add_argument("--port", type=int, default=8765)
    _simulator_options(simulate)
    _verbose(simulate, default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except Declined as declined:
        print(f"aita: {declined}", file=sys.stderr)
        return EXIT_FAILED
    except AitaError as error:
        print(f"aita: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interrupted:
        detail = f": {interrupted}" if str(interrupted) else ""
        print(f"\naita: interrupted{detail}", file=sys.stderr)
        print(f"finished work is saved; resume with: {_command_line()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into a pager or head that closed early
        sys.stderr.close()
        return EXIT_OK
    except Exception as error:
        if args.verbose:
            raise
        print(
            f"aita: internal error: {type(error).__name__}: {error} (run with -v for details)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _command_line() -> str:
    return "aita " + shlex.join(sys.argv[1:])


# -- pipelines ---------------------------------------------------------------------------------


def _assignment(args: argparse.Namespace) -> Assignment:
    data_dir = args.data_dir or get_config().data_dir
    return load_assignment(find_assignment(args.assignment, data_dir))


def _options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        dry_run=args.dry_run,
        workers=args.workers,
        rate_limit=args.rate_limit,
        reuse=not (getattr(args, "force", False) or getattr(args, "no_resume", False)),
        yes=args.yes,
    )


def _report(batch: BatchResult | None, failed: list[TaskResult]) -> int:
    if batch is not None:
        m = batch.metrics
        print(
            f"calls: {m.requests} ({m.total_retries} retries), tokens: {m.total_tokens}, "
            f"cost: ${m.total_cost:.4f}, time: {m.wall_time:.1f}s"
        )
    for result in failed[:20]:
        print(f"failed {result.task_id}: {result.error}", file=sys.stderr)
    if len(failed) > 20:
        print(f"... and {len(failed) - 20} more failures", file=sys.stderr)
    if failed:
        print(f"{len(failed)} task(s) failed; the rest is saved. Run again to retry them.")
    return EXIT_FAILED if failed else EXIT_OK


def _generate_rubric(args: argparse.Namespace) -> int:
    assignment = _assignment(args)
    options = _options(args)
    with open_client(options) as client:
        outcome = generate_rubrics(assignment, client, options)
    n = len(assignment.spec.questions)
    instructor = sum(r.source == "instructor" for r in outcome.rubrics.values())
    print(
        f"{assignment.spec.exam_name}: answer keys {len(outcome.answer_keys)}/{n}, "
        f"rubrics {len(outcome.rubrics)}/{n} ({instructor} from the instructor, "
        f"{len(outcome.flagged)} flagged for review); {outcome.reused} reused from earlier runs"
    )
    if outcome.flagged:
        print(f"review these rubrics: {', '.join(outcome.flagged)}")
    print(f"written to {assignment.paths.answer_keys} and {assignment.paths.rubrics}")
    return _report(outcome.batch, outcome.failed)


def _transcribe(args: argparse.Namespace) -> int:
    assignment = _assignment(args)
    options = _options(args)
    with open_client(options) as client:
        outcome = transcribe(assignment, client, options, args.student)
    done = outcome.pages_total - sum(len(p) for p in outcome.incomplete.values())
    print(
        f"{assignment.spec.exam_name}: {done}/{outcome.pages_total} pages transcribed for "
        f"{len(outcome.students)} student(s); {outcome.pages_reused} reused from earlier runs"
    )
    for student, pages in outcome.incomplete.items():
        print(f"{student}: pages not transcribed: {', '.join(map(str, pages))}")
    print(f"written to {assignment.paths.results / 'transcriptions'}")
    return _report(outcome.batch, outcome.failed)


def _grade(args: argparse.Namespace) -> int:
    assignment = _assignment(args)
    options = _options(args)
    with open_client(options) as client:
        outcome = grade(assignment, client, options, args.student)
    students = outcome.summary.get("students", {})
    for name in outcome.students:
        row = students.get(name)
        if row:
            review = f", review: {', '.join(row['needs_review'])}" if row["needs_review"] else ""
            print(f"{name}: {row['total']:g}/{row['max_total']:g} ({row['percent']}%){review}")
    stats = outcome.summary.get("class", {})
    if stats.get("count"):
        print(
            f"class ({stats['count']} complete): mean {stats['mean']:g}, "
            f"median {stats['median']:g}, min {stats['min']:g}, max {stats['max']:g}"
        )
    print(f"{outcome.reused} grades reused from earlier runs")
    print(f"written to {assignment.paths.grade_summary.parent}")
    return _report(outcome.batch, outcome.failed)


# -- workflows ---------------------------------------------------------------------------------


def _generate_course(args: argparse.Namespace) -> int:
    try:
        content = args.content.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AitaError(f"{args.content}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AitaError(f"{args.content}: cannot read ({error})") from None
    if not content.strip():
        raise AitaError(f"{args.content}: the notes are empty")
    options = _options(args)
    with open_client(options) as client:

        def run(
            tasks: Sequence[LLMTask], name: str, done: Callable[[TaskResult], object] | None
        ) -> BatchResult:
            return run_batch(tasks, client, options, name, done, resume=True)

        outcome = generate_course(
            content, args.title, args.output_dir, run, args.chapters, args.instructions
        )
    chapters = len(outcome.outline.chapters) if outcome.outline else 0
    print(f"{len(outcome.chapter_files)}/{chapters} chapters written to {outcome.course_dir}")
    for path in outcome.chapter_files:
        print(f"  {path.name}")
    if outcome.summary_file:
        print(f"  {outcome.summary_file.name}")
    calls = sum(b.metrics.requests for b in outcome.batches)
    cost = sum(b.metrics.total_cost for b in outcome.batches)
    print(f"calls: {calls}, cost: ${cost:.4f}")
    return _report(None, outcome.failed)


def _run_pipeline(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(args.pipeline)
    configured = get_config().pipeline_parallel_enabled
    parallel = configured if configured is not None else bool(pipeline.settings.parallel)
    options = _options(args)
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
    output = args.output or Path(f"{safe_title(pipeline.name)}.results.json")
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


# -- checkpoints and costs ---------------------------------------------------------------------


def _manager(args: argparse.Namespace) -> CheckpointManager:
    return CheckpointManager(args.checkpoint_dir or get_config().parallel_execution.checkpoint_dir)


def _checkpoints(args: argparse.Namespace) -> int:
    manager = _manager(args)
    if args.action == "list":
        paths = manager.list_checkpoints(args.name)
        if not paths:
            print(f"no checkpoints in {manager.checkpoint_dir}")
        for path in paths:
            print(_checkpoint_line(manager, path))
        return EXIT_OK
    if args.action == "show":
        if not args.name:
            raise AitaError("checkpoints show needs a checkpoint name or file")
        given = Path(args.name)
        target = given if given.is_file() else manager.find_latest_checkpoint(args.name)
        if target is None:
            raise AitaError(f"no checkpoint named {args.name!r} in {manager.checkpoint_dir}")
        checkpoint = manager.load(target)
        print(_checkpoint_line(manager, target))
        for record in checkpoint.failed.values():
            print(f"  failed {record.task_id}: {record.error}")
        return EXIT_OK
    paths = manager.list_checkpoints(args.name)
    doomed = len(paths) - (args.keep if args.name else 0)
    if not paths or (args.name and doomed <= 0):
        print("nothing to clean")
        return EXIT_OK
    if not args.yes and sys.stdin.isatty():
        print(f"delete checkpoints in {manager.checkpoint_dir}? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in {"y", "yes"}:
            print("nothing deleted")
            return EXIT_OK
    removed = manager.cleanup(args.name, keep_latest=args.keep)
    print(f"deleted {len(removed)} checkpoint(s)")
    return EXIT_OK


def _checkpoint_line(manager: CheckpointManager, path: Path) -> str:
    try:
        c = manager.load(path)
    except AitaError as error:
        return f"{path.name}: unreadable ({error})"
    cost = sum(t["cost"] for t in c.spent.values())
    return (
        f"{path.name}: {c.name}, {len(c.succeeded)} ok / {len(c.failed)} failed of "
        f"{c.total_tasks} tasks, ${cost:.4f}, created {c.created_at}"
    )


def _costs(args: argparse.Namespace) -> int:
    manager = _manager(args)
    by_batch: dict[str, float] = {}
    by_model: dict[str, list[float]] = {}
    by_operation: dict[str, float] = {}
    for path in manager.list_checkpoints():
        try:
            checkpoint = manager.load(path)
        except AitaError as error:
            log.warning("%s", error)
            continue
        operation = checkpoint.name.rsplit("__", 1)[-1] if "__" in checkpoint.name else "batch"
        for model, spent in checkpoint.spent.items():
            by_batch[checkpoint.name] = by_batch.get(checkpoint.name, 0.0) + spent["cost"]
            by_operation[operation] = by_operation.get(operation, 0.0) + spent["cost"]
            totals = by_model.setdefault(model, [0.0, 0.0, 0.0])
            totals[0] += spent["cost"]
            totals[1] += spent["prompt_tokens"]
            totals[2] += spent["completion_tokens"]
    if not by_batch:
        print(f"no recorded calls in {manager.checkpoint_dir}")
        return EXIT_OK
    print("by operation:")
    for name, cost in sorted(by_operation.items()):
        print(f"  {name:<40} ${cost:.4f}")
    print("by model:")
    for model, (cost, prompt, completion) in sorted(by_model.items()):
        print(
            f"  {model:<40} ${cost:.4f}  "
            f"({int(prompt)} prompt + {int(completion)} completion tokens)"
        )
    print("by batch:")
    for name, cost in sorted(by_batch.items()):
        print(f"  {name:<40} ${cost:.4f}")
    print(f"total: ${sum(by_batch.values()):.4f}")
    return EXIT_OK


# -- demo and simulator ------------------------------------------------------------------------


def _simulator_config(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        rate_limit=args.server_rate_limit, latency=args.latency, error_rate=args.error_rate
    )


def _demo(args: argparse.Namespace) -> int:
    with ProviderSimulator(_simulator_config(args)) as sim:
        client = create_openrouter_client(api_key="simulator", base_url=sim.base_url, timeout=30)
        executor = ParallelLLMExecutor(
            client,
            max_workers=args.workers,
            rate_limit=args.rate_limit,
            checkpoint_dir=args.checkpoint_dir,
            show_progress=not args.no_progress,
            max_retries=5,
        )
        tasks = [
            SimpleLLMTask(f"demo_{i:05d}", f"Explain concept {i} in one sentence.")
            for i in range(args.tasks)
        ]
        result = executor.execute_batch(
            tasks, checkpoint_name=f"demo_{args.tasks}", resume_from_checkpoint=not args.no_resume
        )
        client.close()
    m = result.metrics
    print(
        f"tasks: {m.completed_tasks}/{m.total_tasks} succeeded, {m.failed_tasks} failed, "
        f"{m.resumed_tasks} resumed from checkpoint"
    )
    print(
        f"wall time: {m.wall_time:.2f}s  throughput: {m.throughput:.1f} tasks/s  "
        f"p50/p95 latency: {m.p50_latency:.3f}/{m.p95_latency:.3f}s"
    )
    if m.requests and args.latency > 0:
        print(f"speedup over sequential calls: {m.requests * args.latency / m.wall_time:.1f}x")
    if result.checkpoint_path:
        print(f"checkpoint: {result.checkpoint_path}")
    return _report(result, result.failed_results)


def _simulate(args: argparse.Namespace) -> int:
    sim = ProviderSimulator(_simulator_config(args), port=args.port)
    print(f"provider simulator on {sim.base_url} (Ctrl-C stops)", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        sim.stop()
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate-rubric": _generate_rubric,
    "transcribe": _transcribe,
    "grade": _grade,
    "generate-course": _generate_course,
    "run": _run_pipeline,
    "checkpoints": _checkpoints,
    "costs": _costs,
    "demo": _demo,
    "simulate": _simulate,
}


if __name__ == "__main__":
    sys.exit(main())
