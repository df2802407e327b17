"""``aita report``: the page and the gradebook a teacher opens, from what the pipelines wrote."""

from __future__ import annotations

import argparse
import sys

from aita.cli._options import assignment_of
from aita.cli._parsers import Commands, add_command, results_options
from aita.cli._summary import EXIT_OK, info
from aita.pipelines import overrides
from aita.pipelines.assignment import ResultPaths
from aita.pipelines.report import write_report
from aita.terminal import printable


def register(commands: Commands) -> None:
    report = add_command(
        commands,
        "report",
        help="results/report.html and results/gradebook.csv from the grades (no model calls)",
        description=(
            "Write results/report.html (class summary, score distribution, per-question "
            "statistics, every student's answers, points, feedback and flags) and "
            "results/gradebook.csv (a row per student, a column per question) from what "
            "generate-rubric, transcribe and grade wrote. Calls no model."
        ),
        examples=[
            "aita report --assignment midterm",
            "aita report --assignment midterm --dry-run   # the simulated results",
        ],
    )
    results_options(report)
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    assignment = assignment_of(args)
    paths = assignment.results_for(args.dry_run)
    simulated = assignment.results_for(dry_run=True)
    if not args.dry_run and not _has_grades(paths) and _has_grades(simulated):
        print("no real grades yet: reporting the dry run's simulated results", file=sys.stderr)
        paths = simulated
    outcome = write_report(assignment, paths)
    report = outcome.report
    not_graded = report.count("transcribed, not graded", "not transcribed")
    print(
        f"{printable(assignment.spec.exam_name)}: {len(report.students)} student(s): "
        f"{report.count('graded')} graded, {report.count('partly graded')} partly graded, "
        f"{not_graded} not graded"
        + ("; dry run (simulated) results included" if report.simulated else "")
    )
    lost = overrides.orphans(assignment, paths)
    if lost:
        print(
            f"overrides of no student folder or question, kept in {printable(paths.overrides)} "
            f"but counted nowhere: {', '.join(map(printable, lost))}",
            file=sys.stderr,
        )
    info(f"written to {paths.report} and {paths.gradebook}")
    return EXIT_OK


def _has_grades(paths: ResultPaths) -> bool:
    folder = paths.grade_summary.parent
    return folder.is_dir() and any(p.name != "summary.json" for p in folder.glob("*.json"))
