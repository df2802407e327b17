"""``aita override``, ``review`` and ``export``: what a teacher does with the grades.

None of them calls a model. They work on the real results, or on the dry run's when there are
no real grades yet (``--dry-run`` picks the dry run's), as ``aita report`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aita.cli._options import assignment_of, check_output_file
from aita.cli._parsers import Commands, add_command, results_options
from aita.cli._summary import EXIT_FAILED, EXIT_OK, info
from aita.cli._types import port_number, positive_int
from aita.files import write_text_atomic
from aita.pipelines import overrides
from aita.pipelines.assignment import Assignment, ResultPaths
from aita.pipelines.export import FORMATS, export
from aita.pipelines.report import build_report
from aita.pipelines.roster import load_roster, roster_path
from aita.terminal import printable


def register(commands: Commands) -> None:
    override = add_command(
        commands,
        "override",
        help="change a grade (a question's or one criterion's points), note it, accept it",
        description="Save a teacher's decision on one answer to results/overrides.json: its "
        "points (of the question, or of one rubric criterion with --criterion), a note, "
        "acceptance of the model's grade, or a mark for regrade. Points are checked against "
        "the question's or criterion's points. Overrides win in the report, the gradebook, "
        "the summary and exports, and survive every re-run (including --force).",
        examples=[
            "aita override --assignment midterm --student alice --question 4a --points 3.5",
            "aita override --assignment midterm --student alice --question 4a --criterion 2 "
            "--points 1 --note 'units missing'",
            "aita override --assignment midterm --student bob --question 9 --accept",
            "aita override --assignment midterm --student bob --question 9 --regrade",
        ],
    )
    results_options(override)
    override.add_argument("--student", required=True, help="the student's folder name")
    override.add_argument("--question", required=True, metavar="ID", help="the question id")
    override.add_argument("--points", type=float, metavar="P", help="the points to give")
    override.add_argument(
        "--criterion", type=positive_int, metavar="N", help="give --points to rubric criterion N"
    )
    override.add_argument("--note", metavar="TEXT", help="a comment kept with the grade")
    override.add_argument(
        "--accept", action="store_true", help="the model's grade is right: drop any override"
    )
    override.add_argument(
        "--regrade", action="store_true", help="mark for regrade: the next aita grade asks again"
    )
    override.set_defaults(handler=_override)

    review = add_command(
        commands,
        "review",
        help="a local page to review grades beside the scanned pages, and change them",
        description="Serve a page on 127.0.0.1 showing each student's answers beside their "
        "scanned pages, the rubric, the model's points and feedback. Accept a grade, change "
        "points per criterion, comment or mark for regrade: each change is saved to "
        "results/overrides.json at once (as aita override does). The address printed holds "
        "a random token; the page answers nothing without it. Ctrl-C stops it.",
        examples=[
            "aita review --assignment midterm",
            "aita review --assignment midterm --port 8765 --dry-run",
        ],
    )
    results_options(review)
    review.add_argument(
        "--port",
        type=port_number,
        default=0,
        metavar="N",
        help="port to listen on (default: a free one)",
    )
    review.set_defaults(handler=_review)

    export_command = add_command(
        commands,
        "export",
        help="grades for Canvas, Moodle or a spreadsheet, students named from the roster",
        description="Write the totals (overrides applied) as Canvas's or Moodle's gradebook "
        "import, or as a CSV with every question, naming each student from the roster "
        "(roster.csv in the assignment folder, or --roster FILE: folder, id, name, email). A "
        "student with results but no roster row is named and the command exits 1; a student "
        "not fully graded gets an empty cell, never 0.",
        examples=[
            "aita export --assignment midterm --format canvas -o canvas.csv",
            "aita export --assignment midterm --format moodle --roster class.csv",
        ],
    )
    results_options(export_command)
    export_command.add_argument("--format", required=True, choices=FORMATS, help="the platform")
    export_command.add_argument("--roster", type=Path, metavar="FILE", help="the roster CSV")
    export_command.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="where to write (default: results/export-FORMAT.csv)",
    )
    export_command.set_defaults(handler=_export)


def results_of(args: argparse.Namespace, assignment: Assignment) -> ResultPaths:
    """The results a teacher command works on (the same choice as ``aita report``)."""
    paths = assignment.results_for(args.dry_run)
    simulated = assignment.results_for(dry_run=True)
    if not args.dry_run and not _has_grades(paths) and _has_grades(simulated):
        print("no real grades yet: using the dry run's simulated results", file=sys.stderr)
        return simulated
    return paths


def _has_grades(paths: ResultPaths) -> bool:
    folder = paths.grade_summary.parent
    return folder.is_dir() and any(p.name != "summary.json" for p in folder.glob("*.json"))


def _override(args: argparse.Namespace) -> int:
    if args.points is None and not (args.accept or args.regrade or args.note is not None):
        raise overrides.OverrideError("give --points, --accept, --regrade or --note")
    if args.accept and args.points is not None:
        raise overrides.OverrideError("--accept keeps the model's points: leave out --points")
    assignment = assignment_of(args)
    paths = results_of(args, assignment)
    change = overrides.Change(
        student=args.student,
        question_id=args.question,
        points=args.points,
        criterion=args.criterion,
        note=args.note,
        accept=args.accept,
        regrade=args.regrade,
    )
    saved = overrides.record(assignment, paths, change)
    question = assignment.spec.question(args.question)
    grades = overrides.read_grades(paths, args.student, assignment.spec.questions)
    applied = overrides.apply(question, grades.get(args.question), saved)
    what = (
        f"{applied.grade.points_awarded:g}/{question.points:g}"
        if applied.grade is not None
        else "not graded"
    )
    model = applied.original.points_awarded if applied.original is not None else None
    beside = f" (the model gave {model:g})" if model is not None and applied.overridden else ""
    flags = (("accepted", saved.accepted), ("marked for regrade", saved.regrade))
    marks = [mark for mark, on in flags if on]
    print(
        f"{printable(args.student)} question {printable(args.question)}: {what}{beside}"
        + (f"; {', '.join(marks)}" if marks else "")
    )
    # the summary counts overrides too: keep it in step
    from aita.pipelines.grade import write_summary

    if paths.grade_summary.parent.is_dir():
        write_summary(assignment, paths)
    info(f"saved to {paths.overrides}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    assignment = assignment_of(args)
    paths = results_of(args, assignment)
    roster_file = roster_path(assignment.root, args.roster)
    root = assignment.root if args.roster is None else roster_file.resolve().parent
    roster = load_roster(roster_file, root)
    output = args.output or paths.results / f"export-{args.format}.csv"
    check_output_file(output, "export")
    report = build_report(assignment, paths)
    done = export(report, roster, args.format)
    write_text_atomic(output, done.text)
    print(f"{done.rows} student(s) exported for {args.format} to {printable(output)}")
    code = EXIT_OK
    if done.missing:
        print(
            f"aita: not in the roster {printable(roster_file)}, not exported: "
            f"{', '.join(map(printable, done.missing))}",
            file=sys.stderr,
        )
        code = EXIT_FAILED
    if done.incomplete:
        print(
            "not fully graded, total left empty: " + ", ".join(map(printable, done.incomplete)),
            file=sys.stderr,
        )
        code = EXIT_FAILED
    if done.absent:
        info("in the roster with no submission: " + ", ".join(map(printable, done.absent)))
    return code


def _review(args: argparse.Namespace) -> int:
    from aita.pipelines.review import serve

    assignment = assignment_of(args)
    paths = results_of(args, assignment)
    build_report(assignment, paths)  # nothing to review yet: exit 2 saying what to run first
    try:
        serve(assignment, paths, port=args.port, announce=lambda url: print(url, flush=True))
    except KeyboardInterrupt:
        print(f"\nstopped; every change is saved in {printable(paths.overrides)}", file=sys.stderr)
    return EXIT_OK
