"""``aita grade``: each transcribed answer against its rubric, then totals and a class summary.

Grades go to ``results/grades/<student>.json`` as each finishes; ``summary.json`` holds every
student's total and the class statistics (mean, median, spread, distribution by tenths).
A blank answer scores 0 without a call, flagged for review; a question whose page is missing
from the submission is not graded at all (never scored 0), and the run says so.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aita.engine import BatchResult, OpenAICompatibleClient, TaskResult
from aita.files import write_json_atomic
from aita.pipelines.assignment import Assignment, AssignmentError, ResultPaths
from aita.pipelines.exam import AnswerKey, Made, QuestionGrade, Rubric, StudentAnswer
from aita.pipelines.execution import RunOptions, run_batch
from aita.pipelines.provenance import request_of, reusable, stamped
from aita.pipelines.result_files import ResultFile, read_records
from aita.pipelines.tasks import GradingTask, create_grading_tasks

M = TypeVar("M", bound=Made)


@dataclass
class GradeOutcome:
    students: list[str]
    summary: dict[str, Any]
    batch: BatchResult | None = None
    reused: int = 0
    failed: list[TaskResult] = field(default_factory=list)
    #: student -> why none of their answers could be graded
    not_gradable: dict[str, str] = field(default_factory=dict)
    #: questions no student could be graded on, for want of a rubric
    questions_without_rubric: list[str] = field(default_factory=list)
    #: student -> the questions whose page is missing from their submission
    pages_missing: dict[str, list[str]] = field(default_factory=dict)

    @property
    def incomplete(self) -> bool:
        return bool(
            self.failed or self.not_gradable or self.questions_without_rubric or self.pages_missing
        )


def grade(
    assignment: Assignment,
    client: OpenAICompatibleClient,
    options: RunOptions,
    student: str | None = None,
) -> GradeOutcome:
    """Grade every answer that has a rubric; students with no transcription and questions with
    no rubric are reported as not gradable (never scored 0)."""
    paths = assignment.results_for(options.dry_run)
    questions = assignment.spec.questions
    rubrics = _made_for(ResultFile(paths.rubrics, Rubric).records, options.dry_run)
    if not rubrics:
        raise AssignmentError(f"{paths.rubrics}: no rubrics; run aita generate-rubric first")
    keys = _made_for(ResultFile(paths.answer_keys, AnswerKey).records, options.dry_run)
    students = assignment.select_students(student)
    outcome = GradeOutcome(students=students, summary={})
    outcome.questions_without_rubric = [
        q.question_id for q in questions if q.question_id not in rubrics
    ]
    files: dict[str, ResultFile[QuestionGrade]] = {}
    tasks: list[GradingTask] = []
    for name in students:
        answers = _answers(paths, assignment, name)
        if answers is None:
            outcome.not_gradable[name] = "no transcription (run aita transcribe first)"
            continue
        # A question with a page_number but no page to read is not transcribed, not blank.
        unread = [
            q for q in questions if q.page_number is not None and not answers[q.question_id].pages
        ]
        if unread and len(unread) == len(questions):
            outcome.not_gradable[name] = "none of their pages was transcribed (no scanned pages?)"
            continue
        grades = files[name] = ResultFile(
            paths.student_grades(name), QuestionGrade, fresh=not options.reuse
        )
        if unread:
            outcome.pages_missing[name] = [q.question_id for q in unread]
            for q in unread:
                grades.drop(q.question_id)  # a grade made before the page went missing
        gradable = [q for q in questions if q.question_id in rubrics and q not in unread]
        blank = [q for q in gradable if not answers[q.question_id].text.strip()]
        for q in blank:
            record = _blank(name, q.question_id, q.points, answers[q.question_id])
            if grades.get(q.question_id) != record:
                grades.put(q.question_id, record)
        answered = [q for q in gradable if q not in blank]
        for task in create_grading_tasks(name, answered, rubrics, answers, keys):
            earlier = grades.get(task.question.question_id)
            if options.reuse and reusable(earlier, request_of(task, client), options.dry_run):
                outcome.reused += 1
            else:
                tasks.append(task)

    def save(result: TaskResult) -> None:
        if result.success and isinstance(result.result, QuestionGrade):
            record = stamped(result.result, result)
            files[record.student].put(record.question_id, record)

    if tasks:
        name = options.batch_name(assignment.name, "grade")
        outcome.batch = run_batch(tasks, client, options, name, save)
        outcome.failed = outcome.batch.failed_results
    outcome.summary = write_summary(assignment, paths)
    return outcome


def _made_for(records: dict[str, M], dry_run: bool) -> dict[str, M]:
    """The records a run may build on: a real run never builds on simulated ones."""
    return {k: r for k, r in records.items() if dry_run or not r.simulated}


def _answers(
    paths: ResultPaths, assignment: Assignment, student: str
) -> dict[str, StudentAnswer] | None:
    """The student's answers; None if the student has not been transcribed."""
    answers = read_records(paths.student_answers(student), StudentAnswer)
    if answers is None:
        return None
    for q in assignment.spec.questions:
        answers.setdefault(q.question_id, StudentAnswer(question_id=q.question_id, text=""))
    return answers


def _blank(student: str, qid: str, points: float, answer: StudentAnswer) -> QuestionGrade:
    return QuestionGrade(
        student=student,
        question_id=qid,
        points_awarded=0.0,
        max_points=points,
        criterion_scores=[],
        feedback="No answer was found on the scanned pages.",
        needs_review=True,
        review_reason=f"blank answer ({answer.notes or 'nothing transcribed'})",
    )


def write_summary(assignment: Assignment, paths: ResultPaths) -> dict[str, Any]:
    """Totals for every student with grades so far, and the class statistics over them."""
    questions = assignment.spec.questions
    max_total = sum(q.points for q in questions)
    students: dict[str, Any] = {}
    per_question: dict[str, list[float]] = {q.question_id: [] for q in questions}
    for name in assignment.students():
        if not paths.student_grades(name).exists():
            continue
        grades = ResultFile(paths.student_grades(name), QuestionGrade).records
        for qid, g in grades.items():
            if qid in per_question:
                per_question[qid].append(g.points_awarded)
        total = sum(g.points_awarded for g in grades.values())
        students[name] = {
            "total": round(total, 3),
            "max_total": max_total,
            "percent": round(100 * total / max_total, 1) if max_total else 0.0,
            "graded_questions": len(grades),
            "complete": len(grades) == len(questions),
            "needs_review": sorted(q for q, g in grades.items() if g.needs_review),
        }
    complete = [s["total"] for s in students.values() if s["complete"]]
    summary = {
        "exam_name": assignment.spec.exam_name,
        "max_total": max_total,
        "students": students,
        "class": _class_statistics(complete, max_total),
        "questions": {
            qid: {"mean": round(statistics.fmean(points), 3), "count": len(points)}
            for qid, points in per_question.items()
            if points
        },
    }
    write_json_atomic(paths.grade_summary, summary)
    return summary


def _class_statistics(totals: list[float], max_total: float) -> dict[str, Any]:
    if not totals:
        return {"count": 0}
    bins = {f"{10 * i}-{10 * i + 9 if i < 9 else 100}%": 0 for i in range(10)}
    for total in totals:
        tenth = min(9, int(10 * total / max_total)) if max_total else 0
        bins[list(bins)[tenth]] += 1
    return {
        "count": len(totals),
        "mean": round(statistics.fmean(totals), 3),
        "median": round(statistics.median(totals), 3),
        "stdev": round(statistics.pstdev(totals), 3),
        "min": min(totals),
        "max": max(totals),
        "distribution": bins,
    }
