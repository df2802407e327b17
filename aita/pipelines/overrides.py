"""A teacher's word on a grade: the one owner of ``results/overrides.json``.

    {"version": 1, "overrides": {"<student>": {"<question>": {
        "points": 3.5,                 # the whole question, or
        "criteria": {"2": 1.5},        # criterion number -> points (the rest stay the model's)
        "note": "...", "accepted": false, "regrade": false,
        "who": "<OS user>", "when": "2026-01-05T10:00:00+00:00",
        "original_points": 2.0, "original_criteria": [1.0, 1.0],
        "graded_by": "<inputs_hash of the grade the teacher saw>"}}}}

Grades are the model's and are rewritten whenever the model grades again (``--force``, a
changed rubric, a regrade); overrides live apart so that nothing a run does can wipe them. Every
reader (the report, the gradebook, ``summary.json``, exports, the review page) gets the grade
through ``apply``, so an override wins everywhere. An override made on a grade that has since
been redone is *stale*: it still wins, and is flagged for review with the reason.

``record`` is the only writer, for ``aita override`` and the review page alike: it checks the
student, the question, the criterion and the bounds (0 <= points <= the question's or the
criterion's points) and writes nothing when one is wrong; the write holds a lock file and
replaces the file atomically, so two writers never lose each other's change.
"""

from __future__ import annotations

import fcntl
import getpass
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aita.config import get_config
from aita.errors import AitaError, validation_problem
from aita.files import FileRefused, read_inside, write_json_atomic
from aita.pipelines.assignment import Assignment, AssignmentError, ResultPaths
from aita.pipelines.exam import POINTS_TOLERANCE, CriterionScore, Question, QuestionGrade

#: A teacher's note longer than this is refused (it is a comment, not an essay).
MAX_NOTE_CHARS = 4000
#: overrides.json larger than this is refused (a class's overrides take kilobytes).
MAX_OVERRIDES_BYTES = 16 * 1024 * 1024

_process_lock = threading.Lock()


class OverrideError(AitaError):
    """An override that cannot stand (unknown student, question or criterion; points out of
    bounds): nothing was written."""


class Override(BaseModel):
    model_config = ConfigDict(extra="ignore")

    #: the whole question's points, set by the teacher (None: the criteria decide)
    points: float | None = None
    #: criterion number (from 1, as text) -> points; criteria not named keep the model's
    criteria: dict[str, float] = Field(default_factory=dict)
    note: str = ""
    #: the teacher looked and agrees with the model: the grade's review flag is cleared
    accepted: bool = False
    #: the teacher wants the model to grade this answer again (``aita grade`` does)
    regrade: bool = False
    who: str
    when: str
    #: the model's points and criterion points when the teacher first changed the grade
    original_points: float | None = None
    original_criteria: list[float] = Field(default_factory=list)
    #: the ``inputs_hash`` of the model's grade the teacher saw: a new grade makes it stale
    graded_by: str | None = None

    @property
    def changes_points(self) -> bool:
        return self.points is not None or bool(self.criteria)


class OverrideFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal[1] = 1
    overrides: dict[str, dict[str, Override]] = Field(default_factory=dict)


@dataclass
class Change:
    """What a teacher asks: ``points`` (of the criterion when ``criterion`` is set, else of the
    question), a note, accept the model's grade as it is, or mark the answer for regrade."""

    student: str
    question_id: str
    points: float | None = None
    criterion: int | None = None
    note: str | None = None
    accept: bool = False
    regrade: bool = False


@dataclass
class Applied:
    """One answer's grade as everyone must see it: the model's, with the teacher's override."""

    #: what counts (the override applied), None when neither the model nor the teacher graded
    grade: QuestionGrade | None
    #: the model's own grade, as it is in the grade file
    original: QuestionGrade | None
    override: Override | None = None
    #: why the override may no longer fit the grade (it still wins), None when it fits
    stale: str | None = None

    @property
    def overridden(self) -> bool:
        return self.override is not None and self.override.changes_points


def load(paths: ResultPaths) -> dict[str, dict[str, Override]]:
    """student -> question -> override; empty when there is no file. A file that is not
    valid is an ``AssignmentError`` naming it (it is never replaced by an empty one)."""
    path = paths.overrides
    try:
        raw = read_inside(
            path,
            path.parent,
            max_bytes=MAX_OVERRIDES_BYTES,
            missing_ok=True,
            allow_outside=get_config().allow_outside_paths,
        )
    except FileRefused as refused:
        raise AssignmentError(f"{refused}; fix or remove it") from None
    if raw is None:
        return {}
    try:
        return OverrideFile.model_validate(orjson.loads(raw)).overrides
    except orjson.JSONDecodeError as error:
        raise AssignmentError(f"{path}: invalid JSON ({error}); fix it") from None
    except ValidationError as error:
        where, what = validation_problem(error)
        raise AssignmentError(f"{path}: {where}: {what}; fix it") from None


def orphans(assignment: Assignment, paths: ResultPaths) -> list[str]:
    """``student/question`` of overrides that no longer match a student folder or a question
    (a folder renamed, a question removed): kept in the file, counted nowhere, so named."""
    students = set(assignment.students())
    ids = {q.question_id for q in assignment.spec.questions}
    return [
        f"{student}/{qid}"
        for student, questions in load(paths).items()
        for qid in questions
        if student not in students or qid not in ids
    ]


def count(paths: ResultPaths) -> int:
    return sum(len(questions) for questions in load(paths).values())


def record(
    assignment: Assignment,
    paths: ResultPaths,
    change: Change,
    *,
    who: str | None = None,
    now: datetime | None = None,
) -> Override:
    """Check ``change`` and save it; an ``OverrideError`` (nothing written) when it cannot
    stand. Returns the override as saved."""
    question = _question(assignment, change)
    if change.student not in assignment.students():
        raise OverrideError(f"student {change.student!r} not found in {assignment.submissions}")
    grades = read_grades(paths, change.student, assignment.spec.questions)
    grade = grades.get(change.question_id)
    bound, what = _bound(paths, question, grade, change)
    if change.points is not None:
        if not math.isfinite(change.points) or change.points < 0:
            raise OverrideError(f"points must be a number from 0 to {bound:g} ({what})")
        if change.points > bound + POINTS_TOLERANCE:
            raise OverrideError(f"{change.points:g} points is more than {what}: {bound:g}")
    if change.note is not None and len(change.note) > MAX_NOTE_CHARS:
        raise OverrideError(f"the note is longer than {MAX_NOTE_CHARS} characters")
    with _locked(paths):
        data = OverrideFile(overrides=load(paths))
        earlier = data.overrides.get(change.student, {}).get(change.question_id)
        override = _changed(earlier, change, grade, who=who, now=now)
        data.overrides.setdefault(change.student, {})[change.question_id] = override
        write_json_atomic(paths.overrides, data.model_dump(mode="json"))
    return override


def clear_regrade(paths: ResultPaths, marked: list[tuple[str, str]]) -> None:
    """Unmark answers the model has just graded again (the rest of each override stays)."""
    if not marked:
        return
    with _locked(paths):
        data = OverrideFile(overrides=load(paths))
        for student, qid in marked:
            found = data.overrides.get(student, {}).get(qid)
            if found is not None:
                data.overrides[student][qid] = found.model_copy(update={"regrade": False})
        write_json_atomic(paths.overrides, data.model_dump(mode="json"))


def marked_for_regrade(paths: ResultPaths) -> list[tuple[str, str]]:
    return [
        (student, qid)
        for student, questions in load(paths).items()
        for qid, override in questions.items()
        if override.regrade
    ]


def apply(question: Question, grade: QuestionGrade | None, override: Override | None) -> Applied:
    """The grade that counts: the model's, with the teacher's points where they gave some.

    Points beyond what the question or criterion is now worth are capped and flagged; an
    override made on another grade than this one is flagged stale. The teacher's note and
    acceptance clear the model's review flag, a stale override raises it."""
    if override is None:
        return Applied(_flag_disagreement(grade), grade)
    stale = _stale(grade, override)
    if grade is None and override.points is None:
        return Applied(None, None, override, stale)
    if grade is None:
        base = QuestionGrade(
            student="",
            question_id=question.question_id,
            points_awarded=0.0,
            max_points=question.points,
            criterion_scores=[],
            feedback="",
        )
    else:
        base = grade
    scores = list(base.criterion_scores)
    problems = [stale] if stale else []
    for number, points in sorted(override.criteria.items(), key=lambda item: int(item[0])):
        n = int(number)
        if not 1 <= n <= len(scores):
            problems.append(f"criterion {n} no longer exists")
            continue
        score = scores[n - 1]
        if points > score.max_points + POINTS_TOLERANCE:
            problems.append(f"criterion {n}: {points:g} is more than its {score.max_points:g}")
        scores[n - 1] = CriterionScore(
            description=score.description,
            points_awarded=min(points, score.max_points),
            max_points=score.max_points,
            comment=score.comment,
        )
    if override.points is not None:
        total = override.points
        if total > question.points + POINTS_TOLERANCE:
            problems.append(f"{total:g} points is more than the question's {question.points:g}")
            total = question.points
    elif override.criteria:
        total = min(sum(s.points_awarded for s in scores), question.points)
    else:
        total = base.points_awarded
    reason = "; ".join(problems) or None
    if reason is not None:
        needs_review, review_reason = True, f"teacher's override to check: {reason}"
    elif override.changes_points or override.accepted:
        needs_review, review_reason = False, None
    else:  # a note only: the model's flags stand
        flagged = _flag_disagreement(base) or base
        needs_review, review_reason = flagged.needs_review, flagged.review_reason
    effective = base.model_copy(
        update={
            "points_awarded": round(total, 6),
            "criterion_scores": scores,
            "needs_review": needs_review,
            "review_reason": review_reason,
        }
    )
    return Applied(effective, grade, override, reason)


def applied_grades(
    questions: list[Question],
    grades: dict[str, QuestionGrade],
    overrides: dict[str, Override],
) -> dict[str, Applied]:
    """question id -> the grade that counts, for one student (every question of the exam)."""
    return {
        q.question_id: apply(q, grades.get(q.question_id), overrides.get(q.question_id))
        for q in questions
    }


def _flag_disagreement(grade: QuestionGrade | None) -> QuestionGrade | None:
    """The grade flagged for review when a second grader disagrees (until a teacher decides)."""
    opinion = grade.second_opinion if grade is not None else None
    if grade is None or opinion is None or not opinion.disagrees:
        return grade
    who = opinion.model or "another grader"
    reason = (
        f"graders disagree: {who} gave {opinion.points_awarded:g}, this grade "
        f"{grade.points_awarded:g} (tolerance {opinion.tolerance:g})"
    )
    joined = f"{grade.review_reason}; {reason}" if grade.review_reason else reason
    return grade.model_copy(update={"needs_review": True, "review_reason": joined})


def disagreement(applied: Applied) -> bool:
    """Two graders differ by more than the tolerance and no teacher has decided yet."""
    grade = applied.original
    decided = applied.override is not None and (
        applied.override.changes_points or applied.override.accepted
    )
    return bool(grade and grade.second_opinion and grade.second_opinion.disagrees and not decided)


def _stale(grade: QuestionGrade | None, override: Override) -> str | None:
    if override.graded_by is None:
        return None
    if grade is None:
        return "the model's grade it changed is gone"
    if grade.inputs_hash != override.graded_by:
        return "the model graded this answer again since (the rubric or the answer changed)"
    return None


def _question(assignment: Assignment, change: Change) -> Question:
    for question in assignment.spec.questions:
        if question.question_id == change.question_id:
            return question
    known = ", ".join(q.question_id for q in assignment.spec.questions)
    raise OverrideError(f"question {change.question_id!r} not in the exam (questions: {known})")


def _bound(
    paths: ResultPaths, question: Question, grade: QuestionGrade | None, change: Change
) -> tuple[float, str]:
    """The most points ``change`` may give, and what that bound is, for the message."""
    name = f"question {question.question_id}"
    if change.criterion is None:
        return question.points, f"the points of {name}"
    if change.points is None:
        raise OverrideError("--criterion needs --points")
    if grade is not None and grade.criterion_scores:
        maxima = [s.max_points for s in grade.criterion_scores]
    else:
        raise OverrideError(
            f"{name} of {change.student!r} has no model grade per criterion: give the "
            "question's points without --criterion"
        )
    if not 1 <= change.criterion <= len(maxima):
        raise OverrideError(
            f"criterion {change.criterion} not in the rubric of {name} "
            f"(criteria 1 to {len(maxima)})"
        )
    return maxima[change.criterion - 1], f"the points of criterion {change.criterion} of {name}"


def read_grades(
    paths: ResultPaths, student: str, questions: list[Question] | None = None
) -> dict[str, QuestionGrade]:
    """The model's grades of ``student`` (none if there is no file), each checked against
    ``questions``: a grade file edited by hand that does not hold together is refused, naming
    the file and both numbers (a teacher changes a grade with ``aita override``)."""
    from aita.pipelines.result_files import read_records

    path = paths.student_grades(student)
    grades = read_records(path, QuestionGrade) or {}
    for question in questions or []:
        grade = grades.get(question.question_id)
        problem = None if grade is None else _incoherent(question, grade)
        if problem:
            raise AssignmentError(
                f"{path}: question {question.question_id}: {problem} (change a grade with "
                "aita override, or grade it again with aita grade --question)"
            )
    return grades


def _incoherent(question: Question, grade: QuestionGrade) -> str | None:
    """Why a grade does not hold together, or None."""
    tolerance = POINTS_TOLERANCE
    if not 0 <= grade.points_awarded <= question.points + tolerance:
        return f"{grade.points_awarded:g} points, but the question is worth {question.points:g}"
    for n, score in enumerate(grade.criterion_scores, start=1):
        if not 0 <= score.points_awarded <= score.max_points + tolerance:
            return (
                f"criterion {n} has {score.points_awarded:g} points, but is worth "
                f"{score.max_points:g}"
            )
    if grade.criterion_scores:
        total = min(sum(s.points_awarded for s in grade.criterion_scores), question.points)
        if abs(total - grade.points_awarded) > tolerance:
            return f"{grade.points_awarded:g} points, but its criteria add up to {total:g}"
    return None


def _changed(
    earlier: Override | None,
    change: Change,
    grade: QuestionGrade | None,
    *,
    who: str | None,
    now: datetime | None,
) -> Override:
    base = earlier or Override(who="", when="")
    update: dict[str, object] = {
        "who": who or _os_user(),
        "when": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
    }
    if change.note is not None:
        update["note"] = change.note
    if change.regrade:
        update["regrade"] = True
    if change.accept:  # the model's grade as it is: the teacher's points go
        update.update(points=None, criteria={}, accepted=True)
    if change.points is not None:
        if change.criterion is None:
            update.update(points=float(change.points), criteria={})
        else:
            criteria = dict(base.criteria)
            criteria[str(change.criterion)] = float(change.points)
            update.update(points=None, criteria=criteria)
        update["accepted"] = False
    if grade is not None and (change.points is not None or change.accept):
        # the model's grade this change was made on (first seen kept as the original)
        update["graded_by"] = grade.inputs_hash
        if earlier is None or earlier.graded_by != grade.inputs_hash:
            update["original_points"] = grade.points_awarded
            update["original_criteria"] = [s.points_awarded for s in grade.criterion_scores]
    return base.model_copy(update=update)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown"


@contextmanager
def _locked(paths: ResultPaths) -> Iterator[None]:
    """One writer at a time: threads of this process, and other processes (the review page
    and ``aita override`` side by side)."""
    folder: Path = paths.overrides.parent
    folder.mkdir(parents=True, exist_ok=True)
    with _process_lock, open(folder / ".overrides.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
