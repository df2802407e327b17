"""``aita report``: what the pipelines wrote, as a page a teacher reads and a gradebook.

Reads ``results/`` only (rubrics, each student's ``answers.json`` and grade file; no model is
called) and writes two files next to them:

- ``report.html``: one self-contained page (styles and the chart inline, nothing fetched, no
  script): the class summary, the distribution of totals, each question's average and spread,
  and per student every question in exam order with points per criterion, feedback, the
  transcribed answer and review flags. Everything that came from a model or a file name is
  escaped (Jinja2 with autoescape on).
- ``gradebook.csv``: a row per student (``student``, one column per question id in exam order,
  ``total``, ``max_total``, ``status``, ``needs_review``), for a spreadsheet or an LMS import.
  UTF-8 with a byte-order mark (so Excel reads accents); every cell quoted (whatever separator
  a spreadsheet's locale expects, a name holding it stays one cell); text cells that a
  spreadsheet would take for a formula get a leading ``'``.

Every grade is read through ``overrides.apply``: a teacher's override wins on the page, in
the gradebook and in the statistics (marked "overridden", the model's points beside it), and
answers two graders disagree on (``--second-opinion``) are listed at the top.

Unfinished work is never a 0: a question without a grade is "not graded" (an empty cell), one
without a transcription "not transcribed", and a student's total is given only once every
question is graded (the page shows the points so far). Class statistics, like ``summary.json``,
count only fully graded students.
"""

from __future__ import annotations

import csv
import io
import shlex
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import jinja2

from aita.files import write_text_atomic
from aita.pipelines import overrides
from aita.pipelines.assignment import Assignment, AssignmentError, ResultPaths
from aita.pipelines.exam import Question, QuestionGrade, Rubric, StudentAnswer
from aita.pipelines.result_files import read_records

QuestionStatus = Literal["graded", "not graded", "not transcribed"]
StudentState = Literal["graded", "partly graded", "transcribed, not graded", "not transcribed"]
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class QuestionResult:
    """One student's one question."""

    question: Question
    #: the grade that counts: the model's with the teacher's override applied
    grade: QuestionGrade | None
    answer: StudentAnswer | None
    #: the model's grade, the teacher's override and whether it is stale (``overrides.apply``)
    applied: overrides.Applied | None = None

    @property
    def overridden(self) -> bool:
        return self.applied is not None and self.applied.overridden

    @property
    def disagreement(self) -> bool:
        return self.applied is not None and overrides.disagreement(self.applied)

    @property
    def status(self) -> QuestionStatus:
        if self.grade is not None:
            return "graded"
        return "not graded" if self.answer is not None else "not transcribed"

    @property
    def simulated(self) -> bool:
        return any(r is not None and r.simulated for r in (self.grade, self.answer))


@dataclass
class StudentResult:
    name: str
    questions: list[QuestionResult]
    max_total: float

    @property
    def graded(self) -> list[QuestionResult]:
        return [q for q in self.questions if q.grade is not None]

    @property
    def complete(self) -> bool:
        return len(self.graded) == len(self.questions)

    @property
    def points(self) -> float:
        """Points of the questions graded so far (the total once ``complete``)."""
        return round(sum(q.grade.points_awarded for q in self.questions if q.grade), 3)

    @property
    def total(self) -> float | None:
        return self.points if self.complete else None

    @property
    def percent(self) -> float | None:
        if self.total is None or not self.max_total:
            return None
        return 100 * self.total / self.max_total

    @property
    def state(self) -> StudentState:
        if self.complete:
            return "graded"
        if self.graded:
            return "partly graded"
        if any(q.answer is not None for q in self.questions):
            return "transcribed, not graded"
        return "not transcribed"

    @property
    def status(self) -> str:
        """The state, with how far grading got when it is partly done."""
        if self.state == "partly graded":
            return f"partly graded: {len(self.graded)} of {len(self.questions)} questions"
        return self.state

    @property
    def needs_review(self) -> list[str]:
        return [q.question.question_id for q in self.graded if q.grade and q.grade.needs_review]

    @property
    def simulated(self) -> bool:
        return any(q.simulated for q in self.questions)


@dataclass
class QuestionStatistics:
    question: Question
    points: list[float]
    needs_review: int
    rubric: Rubric | None

    @property
    def count(self) -> int:
        return len(self.points)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.points) if self.points else None

    @property
    def mean_percent(self) -> float | None:
        if self.mean is None or not self.question.points:
            return None
        return 100 * self.mean / self.question.points

    @property
    def stdev(self) -> float | None:
        return statistics.pstdev(self.points) if self.points else None


@dataclass
class Bar:
    """One bar of the distribution chart, in SVG user units."""

    label: str
    count: int
    x: float
    y: float
    width: float
    height: float


@dataclass
class ClassReport:
    assignment: Assignment
    students: list[StudentResult]
    questions: list[QuestionStatistics]
    models: list[str] = field(default_factory=list)

    @property
    def max_total(self) -> float:
        return sum(q.points for q in self.assignment.spec.questions)

    @property
    def complete_totals(self) -> list[float]:
        return [s.points for s in self.students if s.complete]

    @property
    def simulated(self) -> bool:
        return any(s.simulated for s in self.students)

    @property
    def disagreements(self) -> list[tuple[StudentResult, QuestionResult]]:
        """Answers two graders disagree on (``--second-opinion``), for the top of the page."""
        return [(s, q) for s in self.students for q in s.questions if q.disagreement]

    def count(self, *states: StudentState) -> int:
        return sum(s.state in states for s in self.students)

    @property
    def statistics(self) -> dict[str, float] | None:
        totals = self.complete_totals
        if not totals:
            return None
        return {
            "mean": statistics.fmean(totals),
            "median": statistics.median(totals),
            "stdev": statistics.pstdev(totals),
            "min": min(totals),
            "max": max(totals),
        }


def build_report(assignment: Assignment, paths: ResultPaths) -> ClassReport:
    """Everything the pipelines wrote for ``assignment`` under ``paths``, read and checked (no
    calls)."""
    questions = assignment.spec.questions
    students = []
    teacher = overrides.load(paths)
    for name in assignment.select_students(None):
        answers = read_records(paths.student_answers(name), StudentAnswer) or {}
        grades = overrides.read_grades(paths, name, questions)
        applied = overrides.applied_grades(questions, grades, teacher.get(name, {}))
        results = [
            QuestionResult(
                q,
                applied[q.question_id].grade,
                answers.get(q.question_id),
                applied[q.question_id],
            )
            for q in questions
        ]
        students.append(StudentResult(name, results, sum(q.points for q in questions)))
    if not any(s.graded for s in students):
        raise AssignmentError(_nothing_to_report(assignment, paths, students))
    rubrics = read_records(paths.rubrics, Rubric) or {}
    per_question = []
    for n, q in enumerate(questions):
        graded = [s.questions[n].grade for s in students]
        points = [g.points_awarded for g in graded if g is not None]
        review = sum(g is not None and g.needs_review for g in graded)
        per_question.append(QuestionStatistics(q, points, review, rubrics.get(q.question_id)))
    models = sorted(
        {
            r.model
            for s in students
            for q in s.questions
            for r in (q.grade, q.answer)
            if r is not None and r.model
        }
    )
    return ClassReport(assignment, students, per_question, models)


def _nothing_to_report(
    assignment: Assignment, paths: ResultPaths, students: list[StudentResult]
) -> str:
    steps = []
    if not paths.rubrics.exists():
        steps.append("aita generate-rubric")
    if not any(q.answer for s in students for q in s.questions):
        steps.append("aita transcribe")
    steps.append("aita grade")
    where = f"--data-dir {shlex.quote(str(assignment.root.parent))} --assignment " + shlex.quote(
        assignment.name
    )
    todo = ", then ".join(f"{step} {where}" for step in steps)
    return f"nothing to report: no grades in {paths.grade_summary.parent}; run {todo} first"


@dataclass
class ReportOutcome:
    report: ClassReport
    html: str
    gradebook: str


def write_report(
    assignment: Assignment, paths: ResultPaths, *, now: datetime | None = None
) -> ReportOutcome:
    """Write ``report.html`` and ``gradebook.csv`` beside the results in ``paths``; return what
    was written."""
    report = build_report(assignment, paths)
    html = render_html(report, now=now)
    gradebook = render_gradebook(report)
    write_text_atomic(paths.report, html)
    # utf-8-sig: Excel reads a CSV without a byte-order mark in the local code page.
    write_text_atomic(paths.gradebook, "\ufeff" + gradebook)
    return ReportOutcome(report, html, gradebook)


def render_html(report: ClassReport, *, now: datetime | None = None) -> str:
    template = _environment().get_template("report.html.j2")
    return template.render(
        report=report,
        spec=report.assignment.spec,
        stats=report.statistics,
        bars=distribution_bars(report.complete_totals, report.max_total),
        written=(now or datetime.now()).strftime("%Y-%m-%d %H:%M"),
    )


def render_gradebook(report: ClassReport) -> str:
    """The CSV text: a header of question ids in exam order, then a row per student."""
    ids = [q.question_id for q in report.assignment.spec.questions]
    out = io.StringIO()
    # Every cell quoted: in a locale whose separator is ";" an unquoted "x;=1+2" is two cells,
    # the second a formula that the leading-character guard below never saw.
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)
    writer.writerow(
        _cells(["student", *ids, "total", "max_total", "status", "needs_review"], text=True)
    )
    for student in report.students:
        scores = [q.grade.points_awarded if q.grade else None for q in student.questions]
        status = student.status + (" (dry run: simulated)" if student.simulated else "")
        writer.writerow(
            [
                *_cells([student.name], text=True),
                *_cells([*scores, student.total, student.max_total], text=False),
                *_cells([status, " ".join(student.needs_review)], text=True),
            ]
        )
    return out.getvalue()


def _cells(values: Iterable[object], *, text: bool) -> list[str]:
    """CSV cells: numbers as plain decimals, None empty, text guarded against formulas."""
    cells = []
    for value in values:
        if value is None:
            cells.append("")
        elif isinstance(value, float | int) and not text:
            cells.append(number(value))
        else:
            cell = str(value)
            cells.append(f"'{cell}" if cell.startswith(_FORMULA_STARTS) else cell)
    return cells


def number(value: float | None) -> str:
    """Points as people write them: 27.5, 4, 1.33 (two decimals at most)."""
    if value is None:
        return ""
    text = f"{round(value, 2):.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


#: The chart's size and margins, in SVG user units.
CHART_WIDTH, CHART_HEIGHT, CHART_LEFT, CHART_BOTTOM, CHART_TOP = 640, 240, 36, 40, 20


def distribution_bars(totals: list[float], max_total: float) -> list[Bar]:
    """Ten bars, 0-9% to 90-100% of ``max_total``, scaled to the chart (tallest fills it)."""
    counts = [0] * 10
    for total in totals:
        counts[min(9, int(10 * total / max_total)) if max_total else 0] += 1
    plot_width = CHART_WIDTH - CHART_LEFT - 8
    plot_height = CHART_HEIGHT - CHART_BOTTOM - CHART_TOP
    slot = plot_width / 10
    tallest = max(counts) or 1
    bars = []
    for n, count in enumerate(counts):
        height = plot_height * count / tallest
        bars.append(
            Bar(
                label=f"{10 * n}-{10 * n + 9 if n < 9 else 100}%",
                count=count,
                x=round(CHART_LEFT + n * slot + 4, 1),
                y=round(CHART_TOP + plot_height - height, 1),
                width=round(slot - 8, 1),
                height=round(height, 1),
            )
        )
    return bars


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("aita.pipelines", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["points"] = number
    env.filters["percent"] = lambda value: "" if value is None else f"{value:.1f}%"
    env.globals["chart"] = {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "bottom": CHART_HEIGHT - CHART_BOTTOM,
        "top": CHART_TOP,
    }
    return env
