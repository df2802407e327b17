"""Ready-made tasks for the teaching-assistant pipelines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from aita.exam import AnswerKey, AnswerKeyContent, Question
from aita.services.llm.base import LLMMessage
from aita.utils.llm_tasks import LLMTask, stable_hash

__all__ = ["AnswerKeyTask", "create_answer_key_tasks"]

ANSWER_KEY_SYSTEM_PROMPT = (
    "You are an experienced teaching assistant writing answer keys for exam questions. "
    "Answer with JSON only, matching the requested schema."
)


class AnswerKeyTask(LLMTask):
    """An answer key for one question: correct answer, alternatives, explanation, steps, notes."""

    response_model: ClassVar[type[BaseModel] | None] = AnswerKeyContent

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
        return f"answer_key_{self.question.question_id}"

    def build_messages(self) -> list[LLMMessage]:
        q = self.question
        lines = [
            f"Question {q.question_id} ({q.question_type}, {q.points:g} points):",
            q.question_text,
        ]
        if self.general_instructions:
            lines += ["", f"General instructions: {self.general_instructions}"]
        if self.question_instructions:
            lines += ["", f"Instructions for this question: {self.question_instructions}"]
        lines += [
            "",
            "Write the answer key: the correct answer, acceptable alternative answers, an "
            "explanation, the solution steps and notes for graders.",
        ]
        return [
            LLMMessage(role="system", content=ANSWER_KEY_SYSTEM_PROMPT),
            LLMMessage(role="user", content="\n".join(lines)),
        ]

    def parse_response(self, response_text: str) -> AnswerKey:
        content = AnswerKeyContent.model_validate_json(response_text)
        return AnswerKey(question_id=self.question.question_id, **content.model_dump())

    def get_llm_params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def fingerprint(self) -> str:
        return f"{super().fingerprint()}:{stable_hash(self.question.model_dump(mode='json'))}"


def create_answer_key_tasks(
    questions: Iterable[Question | Mapping[str, Any]],
    general_instructions: str | None = None,
    question_instructions: Mapping[str, str] | None = None,
) -> list[AnswerKeyTask]:
    """One ``AnswerKeyTask`` per question; questions may be ``Question``s or plain dicts."""
    per_question = question_instructions or {}
    tasks = []
    for item in questions:
        question = item if isinstance(item, Question) else Question.model_validate(item)
        tasks.append(
            AnswerKeyTask(
                question,
                general_instructions=general_instructions,
                question_instructions=per_question.get(question.question_id),
            )
        )
    return tasks
