"""The class roster: who each student folder is, for exports to a learning platform.

``roster.csv`` in the assignment folder (or any file given with ``--roster``), UTF-8 (a
byte-order mark is fine), one row per student::

    folder,id,name,email[,section,sis_login_id,canvas_id]
    alice,S1001,"Lee, Alice",alice@example.edu,A

``folder`` is the student's folder under ``submissions/``; ``id`` is the student id the
platform knows (Canvas: SIS User ID; Moodle: ID number). The roster is read for exports only:
it never reaches a model provider.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from aita.config import get_config
from aita.files import MAX_INPUT_BYTES, FileRefused, read_inside
from aita.pipelines.assignment import AssignmentError

REQUIRED = ("folder", "id", "name", "email")
OPTIONAL = ("section", "sis_login_id", "canvas_id")
#: a roster cell longer than this is refused (a name or an email, not a document)
MAX_CELL = 500


@dataclass(frozen=True)
class Student:
    folder: str
    id: str
    name: str
    email: str
    section: str = ""
    sis_login_id: str = ""
    canvas_id: str = ""


def roster_path(assignment_root: Path, given: Path | None) -> Path:
    return given if given is not None else assignment_root / "roster.csv"


def load_roster(path: Path, root: Path) -> dict[str, Student]:
    """folder -> student; an ``AssignmentError`` naming the file (and the line) when the file
    is missing, not UTF-8 CSV, lacks a required column, or names a folder twice."""
    try:
        raw = read_inside(
            path,
            root,
            max_bytes=MAX_INPUT_BYTES,
            allow_outside=get_config().allow_outside_paths,
        )
    except FileRefused as refused:
        raise AssignmentError(
            f"{refused} (a roster: folder, id, name, email; pass --roster FILE)"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise AssignmentError(f"{path}: not UTF-8 text (byte {error.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise AssignmentError(
            f"{path}: missing column(s) {', '.join(missing)} (a roster has: "
            f"{', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})"
        )
    reader.fieldnames = header
    students: dict[str, Student] = {}
    try:
        for row in reader:
            line = reader.line_num
            cells = {k: (row.get(k) or "").strip() for k in (*REQUIRED, *OPTIONAL)}
            if not any(cells.values()):
                continue
            long = [k for k, v in cells.items() if len(v) > MAX_CELL]
            if long:
                raise AssignmentError(f"{path}: line {line}: {long[0]} is too long")
            if not cells["folder"]:
                raise AssignmentError(f"{path}: line {line}: no folder")
            if cells["folder"] in students:
                raise AssignmentError(
                    f"{path}: line {line}: folder {cells['folder']!r} is listed twice"
                )
            students[cells["folder"]] = Student(**cells)
    except csv.Error as error:
        raise AssignmentError(f"{path}: line {reader.line_num}: {error}") from None
    return students
