"""Exam questions and the answer keys generated for them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Question(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question_id: str = Field(min_length=1)
    question_text: str
    points: float = Field(ge=0)
    question_type: str = "short_answer"
    page_number: int | None = Field(default=None, ge=1)


class AnswerKeyContent(BaseModel):
    """What the model is asked for (the question id is ours to add, not the model's to invent)."""

    correct_answer: str
    alternative_answers: list[str] = Field(default_factory=list)
    explanation: str = ""
    solution_steps: list[str] = Field(default_factory=list)
    grading_notes: str = ""


class AnswerKey(AnswerKeyContent):
    question_id: str
