"""``aita generate-rubric``: answer keys, then rubrics built on them, in one task graph.

A rubric task depends on its question's answer-key task and starts as soon as that key exists.
Finished keys and rubrics are written to ``results/`` as they arrive; a re-run (without
``--force``) only does what is missing, plus rubrics that fell back and await review.
Instructor rubrics from ``user_rubrics.json`` are used as-is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aita.engine import BatchResult, LLMTask, OpenAICompatibleClient, TaskResult
from aita.exam import AnswerKey, Rubric
from aita.pipelines.assignment import Assignment
from aita.pipelines.execution import RunOptions, run_batch
from aita.pipelines.result_files import ResultFile
from aita.pipelines.tasks import AnswerKeyTask, RubricTask


@dataclass
class RubricOutcome:
    answer_keys: dict[str, AnswerKey]
    rubrics: dict[str, Rubric]
    batch: BatchResult | None = None
    reused: int = 0
    failed: list[TaskResult] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        return [qid for qid, rubric in self.rubrics.items() if rubric.needs_review]


def plan_rubric_tasks(
    assignment: Assignment, keys: ResultFile[AnswerKey], rubrics: ResultFile[Rubric]
) -> list[LLMTask]:
    """The tasks still to do: missing answer keys, and missing or fallback rubrics."""
    tasks: list[LLMTask] = []
    for question in assignment.spec.questions:
        qid = question.question_id
        general, specific = assignment.instructions, assignment.question_instructions.get(qid)
        key = keys.get(qid)
        if key is None:
            tasks.append(AnswerKeyTask(question, general, specific))
        if qid in assignment.user_rubrics:
            continue
        rubric = rubrics.get(qid)
        if rubric is None or rubric.source == "fallback":
            tasks.append(RubricTask(question, key, general, specific))
    return tasks


def generate_rubrics(
    assignment: Assignment, client: OpenAICompatibleClient, options: RunOptions
) -> RubricOutcome:
    paths = assignment.paths
    keys = ResultFile(paths.answer_keys, AnswerKey, fresh=not options.reuse)
    rubrics = ResultFile(paths.rubrics, Rubric, fresh=not options.reuse)
    for qid, rubric in assignment.user_rubrics.items():
        if rubrics.get(qid) != rubric:
            rubrics.put(qid, rubric)
    tasks = plan_rubric_tasks(assignment, keys, rubrics)
    reused = 2 * len(assignment.spec.questions) - len(assignment.user_rubrics) - len(tasks)

    def save(result: TaskResult) -> None:
        if isinstance(result.result, AnswerKey):
            keys.put(result.result.question_id, result.result)
        elif isinstance(result.result, Rubric):
            rubrics.put(result.result.question_id, result.result)

    batch = None
    if tasks:
        batch = run_batch(tasks, client, options, f"{assignment.name}__generate-rubric", save)
    return RubricOutcome(
        answer_keys=dict(keys.records),
        rubrics=dict(rubrics.records),
        batch=batch,
        reused=reused,
        failed=batch.failed_results if batch else [],
    )
