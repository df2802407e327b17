"""``aita report``: the page and the gradebook a teacher opens, from what the pipelines wrote."""

from __future__ import annotations

import argparse
from pathlib import Path

from aita.cli._common import EXIT_OK, add_verbose, assignment_of
from aita.pipelines.report import write_report


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="results/report.html and results/gradebook.csv from the grades (no model calls)",
        description=(
            "Write results/report.html (class summary, score distribution, per-question "
            "statistics, every student's answers, points, feedback and flags) and "
            "results/gradebook.csv (a row per student, a column per question) from what "
            "generate-rubric, transcribe and grade wrote. Calls no model."
        ),
    )
    report.add_argument("--assignment", required=True, help="assignment folder name (or path)")
    report.add_argument("--data-dir", type=Path, help="where assignments live (AITA_DATA_DIR)")
    add_verbose(report, default=argparse.SUPPRESS)
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    assignment = assignment_of(args)
    outcome = write_report(assignment)
    report = outcome.report
    not_graded = report.count("transcribed, not graded", "not transcribed")
    print(
        f"{assignment.spec.exam_name}: {len(report.students)} student(s): "
        f"{report.count('graded')} graded, {report.count('partly graded')} partly graded, "
        f"{not_graded} not graded"
        + ("; dry run (simulated) results included" if report.simulated else "")
    )
    print(f"written to {assignment.paths.report} and {assignment.paths.gradebook}")
    return EXIT_OK
