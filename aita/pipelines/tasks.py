"""Ready-made tasks for the teaching-assistant pipelines.

Each asks for a ``*Content`` model (sent as a JSON schema) and returns the full domain model,
adding what is ours to know: ids, students, maxima. Validation that a schema cannot express
(rubric points adding up; scores within their criterion) happens in ``parse_response``; a
rubric that does not add up is retried with the error stated.

Task ids are ``pipeline_task_id(kind, *names)``: ``answer_key/1a``, ``rubric/1a``,
``transcribe/alice/page_003``, ``grade/alice/1a``. A ``/`` or ``%`` inside a student's or a
question's name is escaped (``%2F``, ``%25``), so two different (student, question) pairs never
share an id: students ``a`` and ``a_1`` with questions ``1_1`` and ``1`` stay apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from aita.config import get_config
from aita.engine import LLMMessage, LLMTask, VisionLLMTask, validate_json, with_correction
from aita.pipelines.exam import (
    AnswerKey,
    AnswerKeyContent,
    CriterionScore,
    GradeContent,
    PageTranscription,
    PageTranscriptionContent,
    Question,
    QuestionGrade,
    Rubric,
    RubricContent,
    RubricCriterion,
    StudentAnswer,
)
from aita.pipelines.pages import Page

__all__ = [
    "AnswerKeyTask",
    "GradingTask",
    "RubricTask",
    "TranscriptionTask",
    "create_answer_key_tasks",
    "create_grading_tasks",
    "create_rubric_tasks",
    "create_transcription_tasks",
    "pipeline_task_id",
]

SYSTEM_PROMPT = (
    "You are an experienced, fair teaching assistant. Answer with JSON only, matching the "
    "requested schema."
)
LOW_CONFIDENCE = 0.6


def pipeline_task_id(kind: str, *names: str) -> str:
    """The id of a teaching-assistant task: ``kind/name/...``, each name with ``%`` and ``/``
    escaped, so that an id is made by exactly one (kind, names)."""
    return "/".join([kind, *(n.replace("%", "%25").replace("/", "%2F") for n in names)])


def _question_header(question: Question) -> str:
    return (
        f"Question {question.question_id} ({question.question_type}, worth exactly "
        f"{question.points:g} points):\n{question.question_text}"
    )


def _instructions(general: str | None, specific: str | None) -> list[str]:
    lines = []
    if general:
        lines += ["", f"General instructions: {general}"]
    if specific:
        lines += ["", f"Instructions for this question: {specific}"]
    return lines


def _answer_key_text(key: AnswerKey | None) -> list[str]:
    if key is None or key.source == "fallback":
        return []
    lines = ["", "Answer key:", f"Correct answer: {key.correct_answer}"]
    if key.alternative_answers:
        lines.append(f"Also acceptable: {'; '.join(key.alternative_answers)}")
    lines += [f"{n}. {step}" for n, step in enumerate(key.solution_steps, start=1)]
    if key.grading_notes:
        lines.append(f"Grading notes: {key.grading_notes}")
    return lines


def _params(temperature: float) -> dict[str, Any]:
    """Every teaching-assistant task's request parameters: its temperature, and the answer cap
    of ``AITA_MAX_TOKENS`` when one is set."""
    params: dict[str, Any] = {"temperature": temperature}
    cap = get_config().max_tokens
    if cap is not None:
        params["max_tokens"] = cap
    return params


def _messages(user: str) -> list[LLMMessage]:
    return [
        LLMMessage(role="system", content=SYSTEM_PROMPT),
        LLMMessage(role="user", content=user),
    ]


class AnswerKeyTask(LLMTask):
    """An answer key for one question: correct answer, alternatives, explanation, steps, notes."""

    response_model: ClassVar[type[BaseModel] | None] = AnswerKeyContent
    expected_output_tokens = 700

    def __init__(
        self,
        question: Question,
        general_instructions: str | None = None,
        question_instructions: str | None = None,
        temperature: float = 0.2,
    ) -> None:
        self.question = question
        self.general_instructions = general_instructions
        self.question_instructions = question_instructions
        self.temperature = temperature

    @property
    def task_id(self) -> str:
        return pipeline_task_id("answer_key", self.question.question_id)

    def build_messages(self) -> list[LLMMessage]:
        lines = [
            _question_header(self.question),
            *_instructions(self.general_instructions, self.question_instructions),
            "",
            "Write the answer key: the correct answer, acceptable alternative answers, an "
            "explanation, the solution steps and notes for graders.",
        ]
        return _messages("\n".join(lines))

    def parse_response(self, response_text: str) -> AnswerKey:
        content = validate_json(AnswerKeyContent, response_text)
        return AnswerKey(question_id=self.question.question_id, **content.model_dump())

    def fallback(self, error: Exception) -> AnswerKey:
        """An empty key flagged for review: the rubric is then built from the question alone,
        and a later run tries the key again."""
        return AnswerKey(
            question_id=self.question.question_id,
            correct_answer="",
            source="fallback",
            needs_review=True,
            review_reason=f"answer key generation failed: {error}",
        )

    def get_llm_params(self) -> dict[str, Any]:
        return _params(self.temperature)


class RubricTask(LLMTask):
    """A rubric for one question, built on its answer key.

    The key comes either directly (``answer_key=``) or from the answer-key task this one depends
    on. Criteria must add up to the question's points; if they do not, the retry tells the model
    by how much, and after the last retry a one-criterion rubric flagged for review is used.
    """

    response_model: ClassVar[type[BaseModel] | None] = RubricContent
    expected_output_tokens = 600

    def __init__(
        self,
        question: Question,
        answer_key: AnswerKey | None = None,
        general_instructions: str | None = None,
        question_instructions: str | None = None,
        temperature: float = 0.2,
    ) -> None:
        self.question = question
        self.answer_key = answer_key
        self.general_instructions = general_instructions
        self.question_instructions = question_instructions
        self.temperature = temperature
        if answer_key is None:
            self.dependencies = (pipeline_task_id("answer_key", question.question_id),)

    @property
    def task_id(self) -> str:
        return pipeline_task_id("rubric", self.question.question_id)

    def _key(self) -> AnswerKey | None:
        if self.answer_key is not None:
            return self.answer_key
        key_task = pipeline_task_id("answer_key", self.question.question_id)
        found = self.dependency_results.get(key_task)
        return found if isinstance(found, AnswerKey) else None

    def build_messages(self) -> list[LLMMessage]:
        lines = [
            _question_header(self.question),
            *_answer_key_text(self._key()),
            *_instructions(self.general_instructions, self.question_instructions),
            "",
            "Write a grading rubric: criteria, each with a description, its points and examples "
            "of answers that earn them. Partial credit should be possible where the question "
            f"allows it. The criteria's points must sum to exactly {self.question.points:g}.",
        ]
        return _messages("\n".join(lines))

    def parse_response(self, response_text: str) -> Rubric:
        content = validate_json(RubricContent, response_text)
        rubric = Rubric(
            question_id=self.question.question_id,
            total_points=self.question.points,
            criteria=content.criteria,
        )
        problem = rubric.check_points()
        if problem:
            raise ValueError(problem)
        return rubric

    def revise_messages(self, messages: list[LLMMessage], error: Exception) -> list[LLMMessage]:
        return with_correction(messages, error)

    def fallback(self, error: Exception) -> Rubric:
        return Rubric(
            question_id=self.question.question_id,
            total_points=self.question.points,
            criteria=[
                RubricCriterion(
                    description="Complete and correct answer (fallback rubric: review it)",
                    points=self.question.points,
                )
            ],
            source="fallback",
            needs_review=True,
            review_reason=f"rubric generation failed: {error}",
        )

    def get_llm_params(self) -> dict[str, Any]:
        return _params(self.temperature)


class TranscriptionTask(VisionLLMTask):
    """One scanned page through a vision model, sent inline (never uploaded).

    ``image`` is a submitted ``Page`` (PDF pages rendered, photos normalised; see
    ``aita.pipelines.pages``) or the path of an image file. A page that could not be read fails
    this task with the line that says why.
    """

    response_model: ClassVar[type[BaseModel] | None] = PageTranscriptionContent
    expected_output_tokens = 500

    def __init__(
        self,
        student: str,
        page: int,
        image: Page | Path,
        question_ids: list[str],
        temperature: float = 0,
    ) -> None:
        self.student = student
        self.page = page
        self.image = image
        self.question_ids = question_ids
        self.temperature = temperature

    @property
    def task_id(self) -> str:
        return pipeline_task_id("transcribe", self.student, f"page_{self.page:03d}")

    @property
    def image_label(self) -> str:
        """What the page came from, for people: ``exam.pdf page 2``, ``page_003.png``."""
        return self.image.label if isinstance(self.image, Page) else self.image.name

    def get_image_urls(self) -> list[str]:
        if isinstance(self.image, Page):
            if self.image.error is not None:
                raise ValueError(self.image.error)
            return [self.image.data_url()]
        return [str(self.image)]

    def get_prompt_text(self) -> str:
        expected = ", ".join(self.question_ids) if self.question_ids else "none listed"
        return (
            f"Transcribe this scanned exam page (page {self.page}) exactly as the student wrote "
            "it, including crossed-out work marked as [crossed out: ...]. "
            f"Questions expected on this page: {expected}. Start each answer on a new line "
            'with its marker, for example "Q1a:". Give your confidence in the transcription '
            "from 0 to 1 and note anything illegible."
        )

    def get_system_prompt(self) -> str | None:
        return SYSTEM_PROMPT

    def parse_response(self, response_text: str) -> PageTranscription:
        content = validate_json(PageTranscriptionContent, response_text)
        return PageTranscription(
            student=self.student, page=self.page, image=self.image_label, **content.model_dump()
        )

    def get_llm_params(self) -> dict[str, Any]:
        return _params(self.temperature)


class GradingTask(LLMTask):
    """One student's answer to one question, scored per rubric criterion.

    Scores are clamped to each criterion's points and the total to the question's points;
    a missing score or a low-confidence transcription flags the grade for review.
    """

    response_model: ClassVar[type[BaseModel] | None] = GradeContent
    expected_output_tokens = 400

    def __init__(
        self,
        question: Question,
        rubric: Rubric,
        answer: StudentAnswer,
        student: str,
        answer_key: AnswerKey | None = None,
        temperature: float = 0,
        model: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.question = question
        self.rubric = rubric
        self.answer = answer
        self.student = student
        self.answer_key = answer_key
        self.temperature = temperature
        #: another model than the client's (a second opinion), and a seed to vary the same one
        self.model = model
        self.seed = seed

    @property
    def task_id(self) -> str:
        return pipeline_task_id("grade", self.student, self.question.question_id)

    def build_messages(self) -> list[LLMMessage]:
        criteria = [
            f"C{n} ({c.points:g} points): {c.description}"
            for n, c in enumerate(self.rubric.criteria, start=1)
        ]
        lines = [
            _question_header(self.question),
            *_answer_key_text(self.answer_key),
            "",
            "Rubric criteria:",
            *criteria,
            "",
            f"The student's answer, transcribed from a scan (confidence "
            f"{self.answer.confidence:.2f}):",
            '"""',
            self.answer.text,
            '"""',
            "",
            "Score every criterion by its number: points awarded between 0 and the criterion's "
            "points, with a short comment. Then write feedback for the student.",
        ]
        return _messages("\n".join(lines))

    def parse_response(self, response_text: str) -> QuestionGrade:
        content = validate_json(GradeContent, response_text)
        awarded = {s.criterion: s for s in content.scores}
        scores, missing = [], []
        for n, criterion in enumerate(self.rubric.criteria, start=1):
            score = awarded.get(n)
            if score is None:
                missing.append(f"C{n}")
            points = 0.0 if score is None else min(max(score.points_awarded, 0.0), criterion.points)
            scores.append(
                CriterionScore(
                    description=criterion.description,
                    points_awarded=points,
                    max_points=criterion.points,
                    comment=score.comment if score else "not scored by the model",
                )
            )
        total = min(max(sum(s.points_awarded for s in scores), 0.0), self.question.points)
        reasons = []
        if missing:
            reasons.append(f"criteria not scored: {', '.join(missing)}")
        if self.answer.confidence < LOW_CONFIDENCE:
            reasons.append(f"transcription confidence {self.answer.confidence:.2f}")
        if self.rubric.needs_review:
            reasons.append("graded with a rubric flagged for review")
        return QuestionGrade(
            student=self.student,
            question_id=self.question.question_id,
            points_awarded=total,
            max_points=self.question.points,
            criterion_scores=scores,
            feedback=content.feedback,
            needs_review=bool(reasons),
            review_reason="; ".join(reasons) or None,
        )

    def get_llm_params(self) -> dict[str, Any]:
        params = _params(self.temperature)
        if self.model is not None:
            params["model"] = self.model
        if self.seed is not None:
            params["seed"] = self.seed
        return params


def _as_question(item: Question | Mapping[str, Any]) -> Question:
    return item if isinstance(item, Question) else Question.model_validate(item)


def create_answer_key_tasks(
    questions: Iterable[Question | Mapping[str, Any]],
    general_instructions: str | None = None,
    question_instructions: Mapping[str, str] | None = None,
) -> list[AnswerKeyTask]:
    """One ``AnswerKeyTask`` per question; questions may be ``Question``s or plain dicts."""
    per_question = question_instructions or {}
    return [
        AnswerKeyTask(
            q,
            general_instructions=general_instructions,
            question_instructions=per_question.get(q.question_id),
        )
        for q in map(_as_question, questions)
    ]


def create_rubric_tasks(
    questions: Iterable[Question | Mapping[str, Any]],
    answer_keys: Mapping[str, AnswerKey] | None = None,
    general_instructions: str | None = None,
    question_instructions: Mapping[str, str] | None = None,
) -> list[RubricTask]:
    """A ``RubricTask`` per question: on its given answer key, else on the answer-key task."""
    keys = answer_keys or {}
    per_question = question_instructions or {}
    return [
        RubricTask(
            q,
            answer_key=keys.get(q.question_id),
            general_instructions=general_instructions,
            question_instructions=per_question.get(q.question_id),
        )
        for q in map(_as_question, questions)
    ]


def create_transcription_tasks(
    student: str, pages: Iterable[Page | tuple[int, Path]], questions: Iterable[Question]
) -> list[TranscriptionTask]:
    """A ``TranscriptionTask`` per page (a ``Page``, or ``(number, image file)``), told which
    questions to expect on it (by ``page_number``)."""
    by_page: dict[int, list[str]] = {}
    for q in questions:
        if q.page_number is not None:
            by_page.setdefault(q.page_number, []).append(q.question_id)
    tasks = []
    for page in pages:
        number, image = (page.number, page) if isinstance(page, Page) else page
        tasks.append(TranscriptionTask(student, number, image, by_page.get(number, [])))
    return tasks


def create_grading_tasks(
    student: str,
    questions: Iterable[Question],
    rubrics: Mapping[str, Rubric],
    answers: Mapping[str, StudentAnswer],
    answer_keys: Mapping[str, AnswerKey] | None = None,
) -> list[GradingTask]:
    """A ``GradingTask`` per question that has both a rubric and an answer."""
    keys = answer_keys or {}
    return [
        GradingTask(
            q, rubrics[q.question_id], answers[q.question_id], student, keys.get(q.question_id)
        )
        for q in questions
        if q.question_id in rubrics and q.question_id in answers
    ]
