"""``aita export``: the grades as a learning platform imports them.

- ``canvas``: Canvas's gradebook import: ``Student``, ``ID``, ``SIS User ID``, ``SIS Login ID``,
  ``Section``, then one column named for the assignment, and the ``Points Possible`` row
  Canvas's own export has. Canvas matches a row by ``ID`` or ``SIS User ID`` (the roster's
  ``canvas_id`` and ``id``).
- ``moodle``: for Moodle's "Import grades from CSV": ``ID number``, ``Email address``,
  ``Full name`` and the assignment's column; map ``ID number`` or ``Email address`` to the
  user when importing.
- ``csv``: every question's points too: ``folder``, ``id``, ``name``, ``email``, a column
  per question, ``total``, ``max_total``, ``status``.

Totals are the report's (teachers' overrides applied). A student not fully graded gets an
empty cell, never a 0 (both platforms leave a grade alone for an empty cell). A student with
grades but no roster row is not exported and is named in ``missing``: the command exits 1.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Literal

from aita.pipelines.report import ClassReport, _cells
from aita.pipelines.roster import Student

Format = Literal["canvas", "moodle", "csv"]
FORMATS: tuple[Format, ...] = ("canvas", "moodle", "csv")


@dataclass
class Export:
    text: str
    rows: int
    #: student folders with results but no roster row (not exported)
    missing: list[str] = field(default_factory=list)
    #: exported students whose total is left empty, not fully graded
    incomplete: list[str] = field(default_factory=list)
    #: roster rows with no submission folder (not exported)
    absent: list[str] = field(default_factory=list)


def export(report: ClassReport, roster: dict[str, Student], fmt: Format) -> Export:
    spec = report.assignment.spec
    name = spec.exam_name
    out = io.StringIO()
    writer = csv.writer(out)
    ids = [q.question_id for q in spec.questions]
    header = {
        "canvas": ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", name],
        "moodle": ["ID number", "Email address", "Full name", name],
        "csv": ["folder", "id", "name", "email", *ids, "total", "max_total", "status"],
    }[fmt]
    writer.writerow(_cells(header, text=True))
    if fmt == "canvas":
        possible = _cells(["    Points Possible", "", "", "", ""], text=True)
        writer.writerow([*possible, *_number(report.max_total)])
    result = Export(text="", rows=0)
    folders = {s.name for s in report.students}
    result.absent = sorted(f for f in roster if f not in folders)
    for student in report.students:
        person = roster.get(student.name)
        if person is None:
            result.missing.append(student.name)
            continue
        if student.total is None:
            result.incomplete.append(student.name)
        total = _number(student.total)
        if fmt == "canvas":
            who = [person.name, person.canvas_id, person.id, person.sis_login_id, person.section]
            writer.writerow([*_cells(who, text=True), *total])
        elif fmt == "moodle":
            writer.writerow([*_cells([person.id, person.email, person.name], text=True), *total])
        else:
            scores = [q.grade.points_awarded if q.grade else None for q in student.questions]
            writer.writerow(
                [
                    *_cells([person.folder, person.id, person.name, person.email], text=True),
                    *_cells([*scores, student.total, student.max_total], text=False),
                    *_cells([student.status], text=True),
                ]
            )
        result.rows += 1
    result.text = out.getvalue()
    return result


def _number(value: float | None) -> list[str]:
    return _cells([value], text=False)
