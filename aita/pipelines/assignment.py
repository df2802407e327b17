"""An assignment folder: loaded and validated once, with one place that builds result paths.

    <data-dir>/<assignment>/
        exam_spec.json              {exam_name, total_points, questions: [...]}
        instructions.txt            optional, for answer keys and rubrics
        question_instructions.json  optional {"1a": "..."}
        user_rubrics.json           optional {"1a": {"criteria": [...]}}: used as-is
        submissions/<student>/page_001.png ...
        results/                    everything aita writes (a dry run's: results/dry-run/)

Every problem with these files is an ``AssignmentError``: one line naming the file and the
problem, so the command line can exit 2 without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from aita.errors import AitaError, validation_problem
from aita.exam import ExamSpec, Rubric, RubricContent
from aita.files import safe_filename

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
        if not self.submissions.is_dir():
            return []
        return sorted(p.name for p in self.submissions.iterdir() if p.is_dir())

    def select_students(self, student: str | None) -> list[str]:
        students = self.students()
        if student is None:
            if not students:
                raise AssignmentError(f"{self.submissions}: no student folders")
            return students
        if student not in students:
            raise AssignmentError(
                f"student {student!r} not found in {self.submissions} "
                f"(found: {', '.join(students) or 'none'})"
            )
        return [student]


def find_assignment(name: str, data_dir: Path) -> Path:
    """``--assignment Midterm`` finds ``Midterm/`` or ``midterm/`` in the data dir (or a path)."""
    direct = Path(name)
    if direct.is_dir() and (direct / "exam_spec.json").exists():
        return direct
    candidate = data_dir / name
    if candidate.is_dir():
        return candidate
    if data_dir.is_dir():
        for child in sorted(data_dir.iterdir()):
            if child.is_dir() and child.name.lower() == name.lower():
                return child
        found = ", ".join(sorted(p.name for p in data_dir.iterdir() if p.is_dir())) or "none"
        raise AssignmentError(f"assignment {name!r} not found in {data_dir} (found: {found})")
    raise AssignmentError(
        f"assignment {name!r} not found: data dir {data_dir} does not exist "
        "(set AITA_DATA_DIR or pass --data-dir)"
    )


def load_assignment(root: Path) -> Assignment:
    spec_file = root / "exam_spec.json"
    spec = _validated(ExamSpec, _read_json(spec_file), spec_file)
    assignment = Assignment(root=root, spec=spec)
    instructions = root / "instructions.txt"
    if instructions.exists():
        assignment.instructions = _read_text(instructions).strip() or None
    ids = {q.question_id for q in spec.questions}
    per_question = root / "question_instructions.json"
    if per_question.exists():
        data = _read_json(per_question)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise AssignmentError(f"{per_question}: expected an object of question id -> text")
        _known_ids(data, ids, per_question)
        assignment.question_instructions = {str(k): v for k, v in data.items()}
    rubrics_file = root / "user_rubrics.json"
    if rubrics_file.exists():
        assignment.user_rubrics = _user_rubrics(rubrics_file, spec)
    return assignment


def _user_rubrics(path: Path, spec: ExamSpec) -> dict[str, Rubric]:
    data = _read_json(path)
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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AssignmentError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AssignmentError(f"{path}: cannot read ({error})") from None


def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AssignmentError(f"{path}: file not found") from None
    except OSError as error:
        raise AssignmentError(f"{path}: cannot read ({error.strerror})") from None
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
