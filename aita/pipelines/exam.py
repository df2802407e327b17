"""The exam domain: questions, answer keys, rubrics, transcriptions and grades.

``*Content`` models are what the model is asked to produce (sent as JSON schemas); the models
without the suffix add what is ours to know (ids, students, maxima), never the model's to invent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

POINTS_TOLERANCE = 1e-6


class Question(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question_id: str = Field(min_length=1)
    question_text: str = Field(min_length=1)
    points: float = Field(ge=0)
    question_type: str = "short_answer"
    page_number: int | None = Field(default=None, ge=1)

    @field_validator("question_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class ExamSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    exam_name: str = Field(min_length=1)
    total_points: float = Field(ge=0)
    questions: list[Question] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ExamSpec:
        seen: dict[str, int] = {}
        for number, question in enumerate(self.questions, start=1):
            if question.question_id in seen:
                raise ValueError(
                    f"duplicate question_id {question.question_id!r} "
                    f"(questions {seen[question.question_id]} and {number})"
                )
            seen[question.question_id] = number
        return self

    @model_validator(mode="after")
    def _total_adds_up(self) -> ExamSpec:
        # A total that is not the questions' sum is a typo in one of them: which one is the
        # teacher's to say, so the spec is refused rather than one number trusted.
        total = sum(q.points for q in self.questions)
        if abs(total - self.total_points) > POINTS_TOLERANCE:
            raise ValueError(
                f"total_points is {self.total_points:g}, but the questions' points add up "
                f"to {total:g}"
            )
        return self

    def question(self, question_id: str) -> Question:
        return next(q for q in self.questions if q.question_id == question_id)


class Made(BaseModel):
    """Provenance of a generated record (see ``aita.pipelines.provenance``)."""

    #: the model that made it; None for what was made without a call (or by the instructor)
    model: str | None = None
    #: made by the provider simulator (``--dry-run``): never reused by a real run
    simulated: bool = False
    #: the request key of the call that made it: a re-run reuses the record only for the same
    inputs_hash: str | None = None


class AnswerKeyContent(BaseModel):
    correct_answer: str
    alternative_answers: list[str] = Field(default_factory=list)
    explanation: str = ""
    solution_steps: list[str] = Field(default_factory=list)
    grading_notes: str = ""


class AnswerKey(Made, AnswerKeyContent):
    question_id: str
    source: Literal["generated", "fallback"] = "generated"
    needs_review: bool = False
    review_reason: str | None = None


class RubricCriterion(BaseModel):
    description: str = Field(min_length=1)
    points: float = Field(ge=0)
    examples: list[str] = Field(default_factory=list)


class RubricContent(BaseModel):
    criteria: list[RubricCriterion] = Field(min_length=1)


class Rubric(Made, RubricContent):
    question_id: str
    total_points: float
    source: Literal["generated", "instructor", "fallback"] = "generated"
    needs_review: bool = False
    review_reason: str | None = None

    def check_points(self) -> str | None:
        """Why the criteria do not add up to the question's points, or None when they do."""
        total = sum(c.points for c in self.criteria)
        if abs(total - self.total_points) > POINTS_TOLERANCE:
            return (
                f"criteria points sum to {total:g}, but question {self.question_id} "
                f"is worth {self.total_points:g} points"
            )
        return None


class PageTranscriptionContent(BaseModel):
    text: str
    confidence: float = Field(ge=0, le=1)
    notes: str = ""


class PageTranscription(Made, PageTranscriptionContent):
    student: str
    page: int
    image: str


class StudentAnswer(Made):
    """A question's answer, cut from the transcribed pages (their model and ``simulated``)."""

    question_id: str
    text: str
    pages: list[int] = Field(default_factory=list)
    confidence: float = Field(default=0.0, ge=0, le=1)
    notes: str = ""


class CriterionScoreContent(BaseModel):
    criterion: int = Field(ge=1, description="the criterion's number, starting at 1")
    points_awarded: float
    comment: str = ""


class GradeContent(BaseModel):
    scores: list[CriterionScoreContent]
    feedback: str


class CriterionScore(BaseModel):
    description: str
    points_awarded: float
    max_points: float
    comment: str = ""


class SecondOpinion(BaseModel):
    """Another grader's points on the same answer (``aita grade --second-opinion``)."""

    model: str | None = None
    points_awarded: float
    #: the largest difference that is not a disagreement, in points
    tolerance: float
    disagrees: bool


class QuestionGrade(Made):
    student: str
    question_id: str
    points_awarded: float
    max_points: float
    criterion_scores: list[CriterionScore]
    feedback: str
    needs_review: bool = False
    review_reason: str | None = None
    second_opinion: SecondOpinion | None = None
