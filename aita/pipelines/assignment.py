"""An assignment folder: loaded and validated once, with one place that builds result paths.

    <data-dir>/<assignment>/
        exam_spec.json              {exam_name, total_points, questions: [...]}
        instructions.txt            optional, for answer keys and rubrics
        question_instructions.json  optional {"1a": "..."}
        user_rubrics.json           optional {"1a": {"criteria": [...]}}: used as-is
        submissions/<student>/page_001.png ...
        roster.csv                  optional: folder, id, name, email (for exports only)
        results/                    everything aita writes (a dry run's: results/dry-run/)

Every problem with these files is an ``AssignmentError``: one line naming the file and the
problem, so the command line can exit 2 without a traceback.

The folder may come from someone else (a cloned repository, a colleague's zip), so nothing in it
leads aita elsewhere: the assignment's files are read with ``files.read_inside`` (inside the
assignment once links are followed, regular files, at most ``MAX_INPUT_BYTES``), a student
folder must lead to a folder inside the assignment, and ``results/`` (with everything in it)
must stay inside the assignment too, so that no result is written elsewhere. An assignment found
in the data dir must be inside it. ``AITA_ALLOW_OUTSIDE_PATHS=true`` lets links lead elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import orjson
from pydantic import BaseModel, ValidationError

from aita.config import get_config
from aita.errors import AitaError, validation_problem
from aita.files import (
    MAX_INPUT_BYTES,
    FileRefused,
    OutsideRoot,
    read_inside,
    resolved_inside,
    safe_filename,
)
from aita.pipelines.exam import ExamSpec, Rubric, RubricContent

M = TypeVar("M", bound=BaseModel)


class AssignmentError(AitaError):
    """The assignment folder or one of its files is missing or malformed."""


@dataclass(frozen=True)
class ResultPaths:
    """Where every output of an assignment goes (and nowhere else)."""

    results: Path

    @property
    def answer_keys(self) -> Path:
        return self.results / "answer_keys.json"

    @property
    def rubrics(self) -> Path:
        return self.results / "rubrics.json"

    def student_dir(self, student: str) -> Path:
        return self.results / "transcriptions" / safe_filename(student, distinct=True)

    def page_transcription(self, student: str, page: int) -> Path:
        return self.student_dir(student) / f"page_{page:03d}.json"

    def student_answers(self, student: str) -> Path:
        return self.student_dir(student) / "answers.json"

    def student_grades(self, student: str) -> Path:
        return self.results / "grades" / f"{safe_filename(student, distinct=True)}.json"

    def second_opinion(self, student: str) -> Path:
        return self.results / "second_opinion" / f"{safe_filename(student, distinct=True)}.json"

    @property
    def overrides(self) -> Path:
        return self.results / "overrides.json"

    @property
    def grade_summary(self) -> Path:
        return self.results / "grades" / "summary.json"

    @property
    def report(self) -> Path:
        return self.results / "report.html"

    @property
    def gradebook(self) -> Path:
        return self.results / "gradebook.csv"


@dataclass
class Assignment:
    root: Path
    spec: ExamSpec
    instructions: str | None = None
    question_instructions: dict[str, str] = field(default_factory=dict)
    user_rubrics: dict[str, Rubric] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def paths(self) -> ResultPaths:
        """Where real results go."""
        return ResultPaths(self.root / "results")

    def results_for(self, dry_run: bool) -> ResultPaths:
        """Real results, or a dry run's, which live apart (``results/dry-run/``) so that a
        simulated answer can never stand in for a real one, nor overwrite it."""
        return ResultPaths(self.root / "results" / "dry-run") if dry_run else self.paths

    @property
    def submissions(self) -> Path:
        return self.root / "submissions"

    def students(self) -> list[str]:
        """The student folders in ``submissions/``; one that leads out of the assignment is an
        ``AssignmentError`` (its pages would be read from wherever it leads)."""
        if not self.submissions.is_dir():
            return []
        _inside(self.submissions, self.root)
        names = []
        for entry in self.submissions.iterdir():
            if entry.is_dir():
                _inside(entry, self.root)
                names.append(entry.name)
        return sorted(names)

    def select_students(self, student: str | None) -> list[str]:
        students = self.students()
        if student is None:
            if not students:
                raise AssignmentError(f"{self.submissions}: no student folders")
            return students
        if student in students:
            return [student]
        # as --assignment: a name in any case, when it names one folder only
        alike = [name for name in students if name.casefold() == student.casefold()]
        if len(alike) == 1:
            return alike
        if alike:
            raise AssignmentError(
                f"student {student!r} matches {', '.join(alike)} in {self.submissions}: "
                "give the name as its folder spells it"
            )
        raise AssignmentError(
            f"student {student!r} not found in {self.submissions} "
            f"(found: {', '.join(students) or 'none'})"
        )


def find_assignment(name: str, data_dir: Path) -> Path:
    """``--assignment Midterm`` finds ``Midterm/`` or ``midterm/`` in the data dir (or a path).

    A folder found in the data dir must be inside it, links followed (a path named directly is
    the user's own choice)."""
    direct = Path(name)
    if direct.is_dir() and (direct / "exam_spec.json").exists():
        return direct
    candidate = data_dir / name
    if candidate.is_dir():
        return _inside(candidate, data_dir, "the data dir")
    if data_dir.is_dir():
        for child in sorted(data_dir.iterdir()):
            if child.is_dir() and child.name.lower() == name.lower():
                return _inside(child, data_dir, "the data dir")
        found = ", ".join(sorted(p.name for p in data_dir.iterdir() if p.is_dir())) or "none"
        raise AssignmentError(f"assignment {name!r} not found in {data_dir} (found: {found})")
    why = "is a file, not a folder" if data_dir.exists() else "does not exist"
    raise AssignmentError(
        f"assignment {name!r} not found: data dir {data_dir} {why} "
        "(set AITA_DATA_DIR or pass --data-dir)"
    )


def load_assignment(root: Path) -> Assignment:
    """The assignment in ``root``, every file in it checked and read; ``results/`` checked to
    stay inside it. Nothing has been written or called when this raises."""
    spec_file = root / "exam_spec.json"
    spec = _validated(ExamSpec, _json(spec_file, _read(spec_file, root)), spec_file)
    assignment = Assignment(root=root, spec=spec)
    instructions = root / "instructions.txt"
    raw = _read(instructions, root, missing_ok=True)
    if raw is not None:
        assignment.instructions = _text(instructions, raw).strip() or None
    ids = {q.question_id for q in spec.questions}
    per_question = root / "question_instructions.json"
    raw = _read(per_question, root, missing_ok=True)
    if raw is not None:
        data = _json(per_question, raw)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise AssignmentError(f"{per_question}: expected an object of question id -> text")
        _known_ids(data, ids, per_question)
        assignment.question_instructions = {str(k): v for k, v in data.items()}
    rubrics_file = root / "user_rubrics.json"
    raw = _read(rubrics_file, root, missing_ok=True)
    if raw is not None:
        assignment.user_rubrics = _user_rubrics(rubrics_file, _json(rubrics_file, raw), spec)
    check_results_folder(root)
    return assignment


def check_results_folder(root: Path) -> None:
    """``results/`` and everything in it stay inside the assignment, links followed, and hold
    only folders and regular files: otherwise results would be written (or earlier ones read)
    elsewhere, or a FIFO would block a read. An ``AssignmentError`` names the first that does
    not."""
    results = root / "results"
    if not os.path.lexists(results):
        return
    _inside(results, root)
    for folder, folders, files in os.walk(results):
        for name in folders + files:
            path = Path(folder) / name
            if path.is_symlink():
                _inside(path, root)
            elif not (path.is_dir() or path.is_file()):
                raise AssignmentError(f"{path}: not a regular file; remove it from results/")


def _inside(path: Path, root: Path, root_name: str = "the assignment") -> Path:
    """``path``, if it leads inside ``root`` (or the settings allow it elsewhere)."""
    allowed = get_config().allow_outside_paths
    try:
        resolved_inside(path, root, allow_outside=allowed, root_name=root_name)
    except FileRefused as refused:
        raise AssignmentError(_line(refused)) from None
    return path


def _line(refused: FileRefused) -> str:
    if isinstance(refused, OutsideRoot):
        return f"{refused} (set AITA_ALLOW_OUTSIDE_PATHS=true to allow it)"
    return str(refused)


def _user_rubrics(path: Path, data: Any, spec: ExamSpec) -> dict[str, Rubric]:
    if not isinstance(data, dict):
        raise AssignmentError(f"{path}: expected an object of question id -> rubric")
    _known_ids(data, {q.question_id for q in spec.questions}, path)
    rubrics = {}
    for question_id, value in data.items():
        body = {"criteria": value} if isinstance(value, list) else value
        content = _validated(RubricContent, body, path, prefix=f"{question_id}.")
        rubric = Rubric(
            question_id=question_id,
            total_points=spec.question(question_id).points,
            criteria=content.criteria,
            source="instructor",
        )
        problem = rubric.check_points()
        if problem:
            raise AssignmentError(f"{path}: {problem}")
        rubrics[question_id] = rubric
    return rubrics


def _known_ids(data: dict[str, Any], ids: set[str], path: Path) -> None:
    unknown = sorted(set(data) - ids)
    if unknown:
        raise AssignmentError(f"{path}: unknown question id(s): {', '.join(unknown)}")


@overload
def _read(path: Path, root: Path) -> bytes: ...


@overload
def _read(path: Path, root: Path, *, missing_ok: bool) -> bytes | None: ...


def _read(path: Path, root: Path, *, missing_ok: bool = False) -> bytes | None:
    """The file's bytes through ``read_inside`` (None if it is optional and absent)."""
    try:
        return read_inside(
            path,
            root,
            max_bytes=MAX_INPUT_BYTES,
            missing_ok=missing_ok,
            allow_outside=get_config().allow_outside_paths,
            root_name="the assignment",
        )
    except FileRefused as refused:
        raise AssignmentError(_line(refused)) from None


def _text(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise AssignmentError(f"{path}: not UTF-8 text (byte {error.start})") from None


def _json(path: Path, raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise AssignmentError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None


def _validated(model: type[M], data: Any, path: Path, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        where, problem = validation_problem(error)
        where = f"{prefix}{where}".rstrip(".")
        location = f"{where}: " if where else ""
        raise AssignmentError(f"{path}: {location}{problem}"[:400]) from None
