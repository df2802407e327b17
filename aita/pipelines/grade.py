"""``aita grade``: each transcribed answer against its rubric, then totals and a class summary.

Grades go to ``results/grades/<student>.json`` as each finishes; ``summary.json`` holds every
student's total and the class statistics (mean, median, spread, distribution by tenths).
A blank answer scores 0 without a call, flagged for review; a question whose page is missing
from the submission is not graded at all (never scored 0), and the run says so.

``question=`` (``aita grade --question Q [--student S]``) grades exactly those answers again,
with new calls (no earlier result, journal or cache answers them), and leaves every other grade
alone; answers a teacher marked for regrade (``results/overrides.json``) are graded again the
same way by the next run. ``second_opinion=`` grades every answer once more with another model
(its results in ``results/second_opinion/``) and writes the comparison into each grade: two
graders further apart than the tolerance flag the answer for review. Teachers' overrides are
never touched here; the summary counts them (``overrides.apply``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from aita.engine import BatchResult, OpenAICompatibleClient, TaskResult
from aita.files import write_json_atomic
from aita.pipelines import overrides
from aita.pipelines.assignment import Assignment, AssignmentError, ResultPaths
from aita.pipelines.exam import (
    POINTS_TOLERANCE,
    AnswerKey,
    ExamSpec,
    Made,
    QuestionGrade,
    Rubric,
    SecondOpinion,
    StudentAnswer,
)
from aita.pipelines.execution import RunOptions, run_batch
from aita.pipelines.provenance import request_of, reusable, stamped
from aita.pipelines.result_files import ResultFile, read_records
from aita.pipelines.tasks import GradingTask, create_grading_tasks

M = TypeVar("M", bound=Made)

#: Two graders further apart than this share of the question's points disagree.
DEFAULT_TOLERANCE = 0.25


@dataclass(frozen=True)
class SecondGrader:
    """``--second-opinion MODEL``: who grades every answer a second time."""

    model: str
    #: the share of a question's points two grades may differ by before they disagree
    tolerance: float = DEFAULT_TOLERANCE


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
    #: (student, question) graded again on purpose (``--question``, or marked for regrade)
    regraded: list[tuple[str, str]] = field(default_factory=list)
    regrade_batch: BatchResult | None = None
    #: the second grader's batch, and the (student, question) where the two disagree
    second_batch: BatchResult | None = None
    disagreements: list[tuple[str, str]] = field(default_factory=list)

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
    question: str | None = None,
    second_opinion: SecondGrader | None = None,
) -> GradeOutcome:
    """Grade every answer that has a rubric; students with no transcription and questions with
    no rubric are reported as not gradable (never scored 0). With ``question``, grade exactly
    that question's answers again (of ``student``, or of everyone)."""
    paths = assignment.results_for(options.dry_run)
    rubrics = _made_for(ResultFile(paths.rubrics, Rubric).records, options.dry_run)
    if not rubrics:
        raise AssignmentError(f"{paths.rubrics}: no rubrics; run aita generate-rubric first")
    check_rubrics(rubrics, assignment.spec, paths)
    questions = assignment.spec.questions
    if question is not None:
        questions = [q for q in questions if q.question_id == question]
        if not questions:
            known = ", ".join(q.question_id for q in assignment.spec.questions)
            raise AssignmentError(f"question {question!r} not in the exam (questions: {known})")
    keys = _made_for(ResultFile(paths.answer_keys, AnswerKey).records, options.dry_run)
    students = assignment.select_students(student)
    again = (
        {(name, question) for name in students}
        if question is not None
        else set(overrides.marked_for_regrade(paths))
    )
    outcome = GradeOutcome(students=students, summary={})
    outcome.questions_without_rubric = [
        q.question_id for q in questions if q.question_id not in rubrics
    ]
    files: dict[str, ResultFile[QuestionGrade]] = {}
    tasks: list[GradingTask] = []
    redo: list[GradingTask] = []
    answered_by: dict[str, list[GradingTask]] = {}
    for name in students:
        answers = _answers(paths, assignment, name)
        if answers is None:
            outcome.not_gradable[name] = "no transcription (run aita transcribe first)"
            continue
        # A question with a page_number but no page to read is not transcribed, not blank.
        every = assignment.spec.questions
        if all(q.page_number is not None and not answers[q.question_id].pages for q in every):
            outcome.not_gradable[name] = "none of their pages was transcribed (no scanned pages?)"
            continue
        unread = [
            q for q in questions if q.page_number is not None and not answers[q.question_id].pages
        ]
        grades = files[name] = ResultFile(
            paths.student_grades(name), QuestionGrade, fresh=not options.reuse and not question
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
        answered_by[name] = create_grading_tasks(name, answered, rubrics, answers, keys)
        for task in answered_by[name]:
            earlier = grades.get(task.question.question_id)
            if (name, task.question.question_id) in again:
                redo.append(task)
            elif options.reuse and reusable(earlier, request_of(task, client), options.dry_run):
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
    if redo:
        # Asked again on purpose: neither the journal nor the cache may answer from before.
        fresh = replace(options, reuse=False, cache=False)
        name = options.batch_name(assignment.name, "grade-again")
        batch = outcome.regrade_batch = run_batch(redo, client, fresh, name, save)
        outcome.failed += batch.failed_results
        failed = {r.task_id for r in batch.failed_results}
        outcome.regraded = [
            (t.student, t.question.question_id) for t in redo if t.task_id not in failed
        ]
        overrides.clear_regrade(paths, outcome.regraded)
    if second_opinion is not None:
        first = [t for name in answered_by for t in answered_by[name]]
        _second_opinion(assignment, client, options, paths, files, first, second_opinion, outcome)
    outcome.summary = write_summary(assignment, paths)
    return outcome


def _second_opinion(
    assignment: Assignment,
    client: OpenAICompatibleClient,
    options: RunOptions,
    paths: ResultPaths,
    files: dict[str, ResultFile[QuestionGrade]],
    first: list[GradingTask],
    grader: SecondGrader,
    outcome: GradeOutcome,
) -> None:
    """Grade ``first``'s answers once more with ``grader`` and write into each grade how far
    apart the two are; the same model as the client's is asked at another seed."""
    same = grader.model == client.model
    seconds: dict[str, ResultFile[QuestionGrade]] = {}
    tasks: list[GradingTask] = []
    for task in first:
        second = GradingTask(
            task.question,
            task.rubric,
            task.answer,
            task.student,
            task.answer_key,
            temperature=0.7 if same else task.temperature,
            model=grader.model,
            seed=1 if same else None,
        )
        file = seconds.get(task.student)
        if file is None:
            file = seconds[task.student] = ResultFile(
                paths.second_opinion(task.student), QuestionGrade, fresh=not options.reuse
            )
        earlier = file.get(task.question.question_id)
        if not (options.reuse and reusable(earlier, request_of(second, client), options.dry_run)):
            tasks.append(second)

    def save(result: TaskResult) -> None:
        if result.success and isinstance(result.result, QuestionGrade):
            record = stamped(result.result, result)
            seconds[record.student].put(record.question_id, record)

    if tasks:
        name = options.batch_name(assignment.name, "grade-second-opinion")
        outcome.second_batch = run_batch(tasks, client, options, name, save)
        outcome.failed += outcome.second_batch.failed_results
    for task in first:
        qid = task.question.question_id
        mine = files[task.student].get(qid)
        theirs = seconds[task.student].get(qid)
        if mine is None or theirs is None:
            continue
        tolerance = grader.tolerance * task.question.points
        difference = abs(mine.points_awarded - theirs.points_awarded)
        opinion = SecondOpinion(
            model=theirs.model,
            points_awarded=theirs.points_awarded,
            tolerance=round(tolerance, 6),
            disagrees=difference > tolerance + POINTS_TOLERANCE,
        )
        if opinion.disagrees:
            outcome.disagreements.append((task.student, qid))
        if mine.second_opinion != opinion:
            files[task.student].put(qid, mine.model_copy(update={"second_opinion": opinion}))


def check_rubrics(rubrics: dict[str, Rubric], spec: ExamSpec, paths: ResultPaths) -> None:
    """Refuse a rubric whose criteria do not add up to its question's points (an edited
    ``rubrics.json``, or one made before the question's points changed)."""
    points = {q.question_id: q.points for q in spec.questions}
    for qid, rubric in rubrics.items():
        if qid not in points:
            continue
        total = sum(c.points for c in rubric.criteria)
        if abs(total - points[qid]) > POINTS_TOLERANCE:
            raise AssignmentError(
                f"{paths.rubrics}: the criteria of question {qid} add up to {total:g} points, "
                f"but the question is worth {points[qid]:g} (fix the rubric, or run aita "
                "generate-rubric)"
            )


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
    teacher = overrides.load(paths)
    for name in assignment.students():
        if not paths.student_grades(name).exists() and name not in teacher:
            continue
        model = overrides.read_grades(paths, name, questions)
        applied = overrides.applied_grades(questions, model, teacher.get(name, {}))
        grades = {qid: a.grade for qid, a in applied.items() if a.grade is not None}
        for qid, g in grades.items():
            per_question[qid].append(g.points_awarded)
        total = sum(g.points_awarded for g in grades.values())
        students[name] = {
            "total": round(total, 3),
            "max_total": max_total,
            "percent": round(100 * total / max_total, 1) if max_total else 0.0,
            "graded_questions": len(grades),
            "complete": len(grades) == len(questions),
            "needs_review": sorted(q for q, g in grades.items() if g.needs_review),
            "overridden": sorted(q for q, a in applied.items() if a.overridden),
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
