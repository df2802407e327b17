"""``aita generate-rubric``, ``transcribe`` and ``grade``: the teaching-assistant pipelines."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from aita.cli._options import assignment_of, client_of, options_of
from aita.cli._parsers import Commands, add_command, assignment_options
from aita.cli._summary import EXIT_FAILED, info, report
from aita.cli._types import probability
from aita.engine import OpenAICompatibleClient
from aita.pipelines import overrides
from aita.pipelines.assignment import Assignment
from aita.pipelines.execution import RunOptions
from aita.pipelines.grade import DEFAULT_TOLERANCE, SecondGrader, grade
from aita.pipelines.rubric import generate_rubrics
from aita.pipelines.transcribe import transcribe
from aita.terminal import printable

T = TypeVar("T")
Pipeline = Callable[[Assignment, OpenAICompatibleClient, RunOptions], T]


def register(commands: Commands) -> None:
    common = assignment_options()
    rubric = add_command(
        commands,
        "generate-rubric",
        parents=[common],
        help="answer keys and grading rubrics for every question",
        description="An answer key per question, then a rubric per question built on its key; "
        "written to results/answer_keys.json and results/rubrics.json. Instructor rubrics "
        "(user_rubrics.json) are used as they are.",
        examples=[
            "aita generate-rubric --assignment midterm --dry-run",
            "aita generate-rubric --data-dir exams --assignment midterm --model openai/gpt-4o",
            "aita generate-rubric --assignment midterm --force --yes   # redo every rubric",
        ],
    )
    rubric.set_defaults(handler=_generate_rubric)
    transcribe_command = add_command(
        commands,
        "transcribe",
        parents=[common],
        help="scanned pages to text through a vision model",
        description="Every page of every submission (images, photos, PDFs) through a vision "
        "model; each page is saved under results/transcriptions/ as soon as it is done.",
        examples=[
            "aita transcribe --assignment midterm --dry-run",
            "aita transcribe --assignment midterm --student alice --workers 4",
        ],
    )
    transcribe_command.set_defaults(handler=_transcribe)
    grade_command = add_command(
        commands,
        "grade",
        parents=[common],
        help="score transcribed answers against the rubrics",
        description="Each transcribed answer against its question's rubric: points per "
        "criterion and feedback; results/grades/<student>.json and a class summary.",
        examples=[
            "aita grade --assignment midterm --dry-run",
            "aita grade --assignment midterm --student alice -q",
            "aita grade --assignment midterm --question 4a --student alice   # ask again",
            "aita grade --assignment midterm --second-opinion openai/gpt-4o",
        ],
    )
    grade_command.set_defaults(handler=_grade)
    for command in (transcribe_command, grade_command):
        command.add_argument("--student", help="only this student (default: all)")
    grade_command.add_argument(
        "--question",
        metavar="ID",
        help="grade this question's answers again, with new calls (of --student, or of "
        "everyone); other grades are left as they are",
    )
    grade_command.add_argument(
        "--second-opinion",
        metavar="MODEL",
        help="grade every answer a second time with MODEL (the same model: at another "
        "seed) and flag answers where the two differ by more than --tolerance",
    )
    grade_command.add_argument(
        "--tolerance",
        type=probability,
        default=DEFAULT_TOLERANCE,
        metavar="SHARE",
        help="with --second-opinion: the share of a question's points two grades may differ by",
    )


def _run(args: argparse.Namespace, pipeline: Pipeline[T]) -> tuple[Assignment, T]:
    """Load the assignment, open the provider (or the simulator) and run ``pipeline``."""
    assignment = assignment_of(args)
    options = options_of(args)
    with client_of(options) as client:
        return assignment, pipeline(assignment, client, options)


def _generate_rubric(args: argparse.Namespace) -> int:
    assignment, outcome = _run(args, generate_rubrics)
    n = len(assignment.spec.questions)
    instructor = sum(r.source == "instructor" for r in outcome.rubrics.values())
    print(
        f"{printable(assignment.spec.exam_name)}: answer keys {len(outcome.answer_keys)}/{n}, "
        f"rubrics {len(outcome.rubrics)}/{n} ({instructor} from the instructor, "
        f"{len(outcome.flagged)} flagged for review); {outcome.reused} reused from earlier runs"
    )
    if outcome.flagged_keys:
        print(f"review these answer keys: {', '.join(map(printable, outcome.flagged_keys))}")
    if outcome.flagged:
        print(f"review these rubrics: {', '.join(map(printable, outcome.flagged))}")
    code = report(outcome.batch, reused=outcome.reused)
    if outcome.written:
        info(f"written to {' and '.join(str(path) for path in outcome.written)}")
    else:
        info(f"nothing new to write: {assignment.results_for(args.dry_run).results} is up to date")
    return code


def _transcribe(args: argparse.Namespace) -> int:
    assignment, outcome = _run(args, partial(transcribe, student=args.student))
    done = outcome.pages_total - sum(len(p) for p in outcome.incomplete.values())
    print(
        f"{printable(assignment.spec.exam_name)}: {done}/{outcome.pages_total} pages "
        f"transcribed for {len(outcome.students)} student(s); {outcome.pages_reused} reused "
        "from earlier runs"
    )
    for student, pages in outcome.incomplete.items():
        print(f"{printable(student)}: pages not transcribed: {', '.join(map(str, pages))}")
    code = report(outcome.batch, reused=outcome.pages_reused)
    info(f"written to {assignment.results_for(args.dry_run).results / 'transcriptions'}")
    return code


def _grade(args: argparse.Namespace) -> int:
    second = SecondGrader(args.second_opinion, args.tolerance) if args.second_opinion else None
    pipeline = partial(grade, student=args.student, question=args.question, second_opinion=second)
    assignment, outcome = _run(args, pipeline)
    students = outcome.summary.get("students", {})
    n = len(assignment.spec.questions)
    for name in outcome.students:
        row = students.get(name)
        if name in outcome.not_gradable:
            print(f"{printable(name)}: not gradable: {printable(outcome.not_gradable[name])}")
        elif row:
            so_far = "" if row["complete"] else f" so far ({row['graded_questions']}/{n} graded)"
            review = (
                f", review: {', '.join(map(printable, row['needs_review']))}"
                if row["needs_review"]
                else ""
            )
            score = f"{row['total']:g}/{row['max_total']:g}"
            print(f"{printable(name)}: {score}{so_far} ({row['percent']}%){review}")
        if name in outcome.pages_missing:
            missing = ", ".join(map(printable, outcome.pages_missing[name]))
            print(f"{printable(name)}: not graded, their page is missing: question(s) {missing}")
    if outcome.questions_without_rubric:
        missing = ", ".join(map(printable, outcome.questions_without_rubric))
        print(
            f"not gradable for want of a rubric: question(s) {missing} (run aita generate-rubric)"
        )
    stats = outcome.summary.get("class", {})
    if stats.get("count"):
        print(
            f"class ({stats['count']} complete): mean {stats['mean']:g}, "
            f"median {stats['median']:g}, min {stats['min']:g}, max {stats['max']:g}"
        )
    print(f"{outcome.reused} grades reused from earlier runs")
    if outcome.regraded:
        asked = ", ".join(f"{printable(s)} {printable(q)}" for s, q in outcome.regraded)
        print(f"graded again: {asked}")
    if second is not None:
        found = ", ".join(f"{printable(s)} {printable(q)}" for s, q in outcome.disagreements)
        print(
            f"second opinion ({printable(second.model)}): {len(outcome.disagreements)} "
            f"answer(s) differ by more than {second.tolerance:.0%} of their points"
            + (f", to review: {found}" if found else "")
        )
    paths = assignment.results_for(args.dry_run)
    kept = overrides.count(paths)
    if kept and args.force:
        print(f"--force kept {kept} teacher override(s) in {paths.overrides}: they still win")
    elif kept:
        info(f"{kept} teacher override(s) in {paths.overrides} count over these grades")
    batches = [outcome.batch, outcome.regrade_batch, outcome.second_batch]
    code = report(batches, reused=outcome.reused)
    info(f"written to {paths.grade_summary.parent}")
    return EXIT_FAILED if outcome.incomplete else code
