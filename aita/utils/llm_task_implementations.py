"""Re-exports the teaching-assistant tasks from ``aita.pipelines.tasks``, for code written
against the guide."""

from aita.pipelines.tasks import (
    AnswerKeyTask,
    GradingTask,
    RubricTask,
    TranscriptionTask,
    create_answer_key_tasks,
    create_grading_tasks,
    create_rubric_tasks,
    create_transcription_tasks,
)

__all__ = [
    "AnswerKeyTask",
    "GradingTask",
    "RubricTask",
    "TranscriptionTask",
    "create_answer_key_tasks",
    "create_grading_tasks",
    "create_rubric_tasks",
    "create_transcription_tasks",
]
