"""Pipeline pieces: rubric validation and retry, answer mapping, grade clamping, spend checks."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aita.engine import ExponentialBackoff
from aita.files import safe_filename
from aita.pipelines.assignment import ResultPaths, load_assignment
from aita.pipelines.exam import (
    PageTranscription,
    Question,
    Rubric,
    RubricCriterion,
    StudentAnswer,
)
from aita.pipelines.execution import Declined, RunOptions, check_spend
from aita.pipelines.rubric import generate_rubrics
from aita.pipelines.tasks import GradingTask
from aita.pipelines.transcribe import map_answers, split_by_markers
from tests.support.doubles import SimulatorFactory, client_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"


@pytest.fixture
def assignment_dir(tmp_path: Path) -> Path:
    target = tmp_path / "midterm"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("results"))
    return target


def rubric_answer(points: list[float]) -> str:
    return json.dumps(
        {"criteria": [{"description": f"part {i}", "points": p} for i, p in enumerate(points)]}
    )


def test_rubric_that_does_not_add_up_is_retried_with_the_error_stated(
    simulator: SimulatorFactory, assignment_dir: Path
) -> None:
    requests: list[dict[str, Any]] = []

    def answer(request: dict[str, Any]) -> str | None:
        if request["response_format"]["json_schema"]["name"] != "RubricContent":
            return None
        requests.append(request)
        text = request["messages"][1]["content"]
        worth = float(text.split("must sum to exactly ")[1].rstrip("."))
        first_try = len(request["messages"]) == 2
        return rubric_answer([worth - 1 if first_try else worth])

    sim = simulator(responder=answer)
    assignment = load_assignment(assignment_dir)
    outcome = generate_rubrics(
        assignment, client_for(sim), RunOptions(show_progress=False, rate_limit=1000)
    )
    assert not outcome.failed and not outcome.flagged
    retries = [r for r in requests if len(r["messages"]) == 4]
    assert len(retries) == 9  # every generated rubric once (question 1's is the instructor's)
    correction = retries[0]["messages"][3]["content"]
    assert "That answer was rejected" in correction and "criteria points sum to" in correction
    for qid, rubric in outcome.rubrics.items():
        assert rubric.check_points() is None, qid


def test_rubric_falls_back_flagged_for_review_after_the_last_retry(
    simulator: SimulatorFactory, assignment_dir: Path
) -> None:
    def never_adds_up(request: dict[str, Any]) -> str | None:
        if request["response_format"]["json_schema"]["name"] == "RubricContent":
            return rubric_answer([0.5])
        return None

    sim = simulator(responder=never_adds_up)
    assignment = load_assignment(assignment_dir)
    options = RunOptions(
        show_progress=False, rate_limit=1000, backoff=ExponentialBackoff(initial=0.01)
    )
    outcome = generate_rubrics(assignment, client_for(sim), options)
    assert sorted(outcome.flagged) == sorted(
        q.question_id for q in assignment.spec.questions if q.question_id != "1"
    )
    fallback = outcome.rubrics["9"]
    assert fallback.source == "fallback" and fallback.needs_review
    assert fallback.check_points() is None and "criteria points sum to 0.5" in (
        fallback.review_reason or ""
    )
    saved = json.loads((assignment_dir / "results" / "rubrics.json").read_text())
    assert saved["9"]["needs_review"] is True


def test_instructor_rubric_that_does_not_add_up_is_bad_input(assignment_dir: Path) -> None:
    (assignment_dir / "user_rubrics.json").write_text(
        json.dumps({"2": [{"description": "x", "points": 1}]})
    )
    from aita.pipelines.assignment import AssignmentError

    with pytest.raises(
        AssignmentError,
        match=r"user_rubrics.json: criteria points sum to 1, but question 2 is worth 3",
    ):
        load_assignment(assignment_dir)


@pytest.mark.parametrize(
    ("text", "ids", "expected"),
    [
        ("Q1: a\nQ2: b", ["1", "2"], {"1": "a", "2": "b"}),
        (
            "Question 1a. first\nmore\nquestion 1b) second",
            ["1a", "1b"],
            {"1a": "first\nmore", "1b": "second"},
        ),
        ("**Q10:** ten\nQ1: one", ["1", "10"], {"10": "** ten", "1": "one"}),
        ("[[Q4a]] x\n[[Q4b]]: y", ["4a", "4b"], {"4b": "y"}),
        ("no markers at all", ["1", "2"], {}),
    ],
)
def test_split_by_markers(text: str, ids: list[str], expected: dict[str, str]) -> None:
    assert split_by_markers(text, ids) == expected


def page(n: int, text: str, confidence: float = 0.9) -> PageTranscription:
    return PageTranscription(
        student="s", page=n, image=f"page_{n:03d}.png", text=text, confidence=confidence
    )


def test_answers_are_mapped_by_page_and_marker() -> None:
    questions = [
        Question(question_id="1", question_text="a", points=1, page_number=1),
        Question(question_id="2", question_text="b", points=1, page_number=2),
        Question(question_id="3", question_text="c", points=1, page_number=2),
        Question(question_id="4", question_text="d", points=1, page_number=3),
        Question(question_id="5", question_text="e", points=1),
    ]
    pages = {1: page(1, "whole page one"), 2: page(2, "Q2: two\nQ3: three\nQ5: five", 0.4)}
    answers = map_answers(questions, pages)
    assert answers["1"].text == "whole page one"
    assert (answers["2"].text, answers["3"].text) == ("two", "three\nQ5: five")
    assert answers["3"].confidence == 0.4
    assert answers["4"].text == "" and "page 3 missing" in answers["4"].notes
    assert answers["5"].text == "five" and answers["5"].pages == [2]


def test_grades_are_clamped_to_criteria_and_question_points() -> None:
    question = Question(question_id="q", question_text="t", points=5)
    rubric = Rubric(
        question_id="q",
        total_points=5,
        criteria=[
            RubricCriterion(description="a", points=2),
            RubricCriterion(description="b", points=3),
        ],
    )
    answer = StudentAnswer(question_id="q", text="x", confidence=0.3)
    task = GradingTask(question, rubric, answer, "ann")
    grade = task.parse_response(
        json.dumps(
            {
                "scores": [
                    {"criterion": 1, "points_awarded": 9},
                    {"criterion": 7, "points_awarded": 3},
                ],
                "feedback": "ok",
            }
        )
    )
    assert [s.points_awarded for s in grade.criterion_scores] == [2, 0]
    assert grade.points_awarded == 2
    assert (
        grade.needs_review
        and "C2" in (grade.review_reason or "")
        and "confidence 0.30" in (grade.review_reason or "")
    )
    negative = task.parse_response(
        json.dumps({"scores": [{"criterion": 1, "points_awarded": -4}], "feedback": ""})
    )
    assert negative.points_awarded == 0


@given(st.text(min_size=1, max_size=60))
def test_any_student_name_stays_inside_its_results_folder(name: str) -> None:
    root = Path("/data/exam/results")
    paths = ResultPaths(root)
    for path in (
        paths.student_answers(name),
        paths.page_transcription(name, 1),
        paths.student_grades(name),
    ):
        assert path.resolve().is_relative_to(root)
    assert safe_filename(name, distinct=True) != safe_filename(name + "x", distinct=True)


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_paid_run_asks_on_a_terminal_and_never_blocks_elsewhere(
    simulator: SimulatorFactory,
) -> None:
    from aita.pipelines.tasks import create_answer_key_tasks

    tasks = create_answer_key_tasks([{"question_id": "1", "question_text": "q", "points": 1}])
    client = client_for(simulator(), model="openai/gpt-4o")
    err = io.StringIO()
    with pytest.raises(Declined):
        check_spend(tasks, client, RunOptions(), stdin=FakeTty("n\n"), stderr=err)
    assert "about to make 1 call(s) to openai/gpt-4o at 127.0.0.1 (estimated $0.0" in err.getvalue()
    check_spend(tasks, client, RunOptions(), stdin=FakeTty("y\n"), stderr=io.StringIO())
    check_spend(
        tasks, client, RunOptions(), stdin=io.StringIO(""), stderr=io.StringIO()
    )  # not a TTY
    check_spend(tasks, client, RunOptions(yes=True), stdin=FakeTty(""), stderr=io.StringIO())


@pytest.mark.parametrize("off_by", [0.25, -0.25, 0.01, 1e-3])
def test_rubric_criteria_must_add_up_to_the_points_exactly(off_by: float) -> None:
    from aita.pipelines.tasks import RubricTask

    question = Question(question_id="q", question_text="t", points=4)
    task = RubricTask(question, answer_key=None)
    with pytest.raises(ValueError, match="criteria points sum to"):
        task.parse_response(rubric_answer([2, 2 + off_by]))
    assert task.parse_response(rubric_answer([2.5, 1.5])).check_points() is None


# -- what the mutants of the validation showed untested (scripts/mutation.py) ----------------------


def test_rubric_points_within_a_millionth_of_the_question_add_up() -> None:
    def rubric(points: float) -> Rubric:
        return Rubric(
            question_id="q",
            total_points=0,
            criteria=[RubricCriterion(description="a", points=points)],
        )

    assert rubric(1e-6).check_points() is None  # the tolerance itself is still equal
    assert rubric(2e-6).check_points() == (
        "criteria points sum to 2e-06, but question q is worth 0 points"
    )


def test_an_answer_key_answer_becomes_the_questions_key() -> None:
    from aita.pipelines.tasks import AnswerKeyTask

    task = AnswerKeyTask(Question(question_id="2b", question_text="t", points=2))
    key = task.parse_response(
        json.dumps({"correct_answer": "42", "alternative_answers": ["forty-two"]})
    )
    assert (key.question_id, key.correct_answer, key.alternative_answers) == (
        "2b",
        "42",
        ["forty-two"],
    )
    assert (key.source, key.needs_review) == ("generated", False)
    with pytest.raises(ValueError):
        task.parse_response('{"alternative_answers": []}')  # no correct answer


def test_a_transcription_answer_becomes_the_students_page() -> None:
    from aita.pipelines.pages import Page
    from aita.pipelines.tasks import TranscriptionTask

    answer = json.dumps({"text": "Q1: x = 2", "confidence": 0.8, "notes": "smudged"})
    scan = TranscriptionTask("ann", 3, Path("scans/page_003.png"), ["1"]).parse_response(answer)
    assert (scan.student, scan.page, scan.image) == ("ann", 3, "page_003.png")
    assert (scan.text, scan.confidence, scan.notes) == ("Q1: x = 2", 0.8, "smudged")
    page = Page(number=2, label="exam.pdf page 2", source=Path("exam.pdf"), image=b"x")
    assert TranscriptionTask("bob", 2, page, []).parse_response(answer).image == "exam.pdf page 2"
    with pytest.raises(ValueError):
        TranscriptionTask("ann", 3, Path("p.png"), []).parse_response('{"text": "x"}')


def grading_task(confidence: float = 0.9, rubric_needs_review: bool = False) -> GradingTask:
    question = Question(question_id="q", question_text="t", points=6)
    rubric = Rubric(
        question_id="q",
        total_points=6,
        criteria=[
            RubricCriterion(description="a", points=2),
            RubricCriterion(description="b", points=2),
            RubricCriterion(description="c", points=2),
        ],
        needs_review=rubric_needs_review,
    )
    answer = StudentAnswer(question_id="q", text="x", confidence=confidence)
    return GradingTask(question, rubric, answer, "ann")


def grade_answer(*scored: int) -> str:
    scores = [{"criterion": n, "points_awarded": 1, "comment": f"c{n} ok"} for n in scored]
    return json.dumps({"scores": scores, "feedback": "well done"})


def test_a_fully_scored_confident_grade_needs_no_review() -> None:
    grade = grading_task().parse_response(grade_answer(1, 2, 3))
    assert (grade.needs_review, grade.review_reason) == (False, None)
    assert [s.comment for s in grade.criterion_scores] == ["c1 ok", "c2 ok", "c3 ok"]
    assert (grade.points_awarded, grade.max_points, grade.feedback) == (3, 6, "well done")


def test_every_reason_for_review_is_given() -> None:
    grade = grading_task(confidence=0.3, rubric_needs_review=True).parse_response(grade_answer(2))
    assert grade.needs_review
    assert grade.review_reason == (
        "criteria not scored: C1, C3; transcription confidence 0.30; "
        "graded with a rubric flagged for review"
    )
    assert [s.comment for s in grade.criterion_scores] == [
        "not scored by the model",
        "c2 ok",
        "not scored by the model",
    ]


def test_a_transcription_exactly_at_the_confidence_threshold_is_trusted() -> None:
    from aita.pipelines.tasks import LOW_CONFIDENCE

    grade = grading_task(confidence=LOW_CONFIDENCE).parse_response(grade_answer(1, 2, 3))
    assert not grade.needs_review
