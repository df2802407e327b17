"""``aita generate-rubric``, ``transcribe`` and ``grade``: the teaching-assistant pipelines."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from aita.cli._common import (
    EXIT_FAILED,
    assignment_of,
    assignment_options,
    options_of,
    report,
)
from aita.engine import OpenAICompatibleClient
from aita.pipelines.assignment import Assignment
from aita.pipelines.execution import RunOptions, open_client
from aita.pipelines.grade import grade
from aita.pipelines.rubric import generate_rubrics
from aita.pipelines.transcribe import transcribe

T = TypeVar("T")
Pipeline = Callable[[Assignment, OpenAICompatibleClient, RunOptions], T]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = assignment_options()
    rubric = commands.add_parser(
        "generate-rubric",
        parents=[common],
        help="answer keys and grading rubrics for every question",
        description="Answer keys, then rubrics built on them; written to results/.",
    )
    rubric.set_defaults(handler=_generate_rubric)
    for name, handler, text in (
        ("transcribe", _transcribe, "scanned pages to text through a vision model"),
        ("grade", _grade, "score transcribed answers against the rubrics"),
    ):
        command = commands.add_parser(name, parents=[common], help=text, description=text)
        command.add_argument("--student", help="only this student (default: all)")
        command.set_defaults(handler=handler)


def _run(args: argparse.Namespace, pipeline: Pipeline[T]) -> tuple[Assignment, T]:
    """Load the assignment, open the provider (or the simulator) and run ``pipeline``."""
    assignment = assignment_of(args)
    options = options_of(args)
    with open_client(options) as client:
        return assignment, pipeline(assignment, client, options)


def _generate_rubric(args: argparse.Namespace) -> int:
    assignment, outcome = _run(args, generate_rubrics)
    n = len(assignment.spec.questions)
    instructor = sum(r.source == "instructor" for r in outcome.rubrics.values())
    print(
        f"{assignment.spec.exam_name}: answer keys {len(outcome.answer_keys)}/{n}, "
        f"rubrics {len(outcome.rubrics)}/{n} ({instructor} from the instructor, "
        f"{len(outcome.flagged)} flagged for review); {outcome.reused} reused from earlier runs"
    )
    if outcome.flagged_keys:
        print(f"review these answer keys: {', '.join(outcome.flagged_keys)}")
    if outcome.flagged:
        print(f"review these rubrics: {', '.join(outcome.flagged)}")
    if outcome.written:
        print(f"written to {' and '.join(str(path) for path in outcome.written)}")
    else:
        print(f"nothing new to write: {assignment.results_for(args.dry_run).results} is up to date")
    return report(outcome.batch, outcome.failed)


def _transcribe(args: argparse.Namespace) -> int:
    assignment, outcome = _run(args, partial(transcribe, student=args.student))
    done = outcome.pages_total - sum(len(p) for p in outcome.incomplete.values())
    print(
        f"{assignment.spec.exam_name}: {done}/{outcome.pages_total} pages transcribed for "
        f"{len(outcome.students)} student(s); {outcome.pages_reused} reused from earlier runs"
    )
    for student, pages in outcome.incomplete.items():
        print(f"{student}: pages not transcribed: {', '.join(map(str, pages))}")
    print(f"written to {assignment.results_for(args.dry_run).results / 'transcriptions'}")
    return report(outcome.batch, outcome.failed)


def _grade(args: argparse.Namespace) -> int:
    assignment, outcome = _run(args, partial(grade, student=args.student))
    students = outcome.summary.get("students", {})
    n = len(assignment.spec.questions)
    for name in outcome.students:
        row = students.get(name)
        if name in outcome.not_gradable:
            print(f"{name}: not gradable: {outcome.not_gradable[name]}")
        elif row:
            so_far = "" if row["complete"] else f" so far ({row['graded_questions']}/{n} graded)"
            review = f", review: {', '.join(row['needs_review'])}" if row["needs_review"] else ""
            score = f"{row['total']:g}/{row['max_total']:g}"
            print(f"{name}: {score}{so_far} ({row['percent']}%){review}")
    if outcome.questions_without_rubric:
        missing = ", ".join(outcome.questions_without_rubric)
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
    print(f"written to {assignment.results_for(args.dry_run).grade_summary.parent}")
    code = report(outcome.batch, outcome.failed)
    return EXIT_FAILED if outcome.incomplete else code
