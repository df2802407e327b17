"""``aita generate-rubric``: answer keys, then rubrics built on them, in one task graph.

A rubric task depends on its question's answer-key task and starts as soon as that key exists.
Finished keys and rubrics are written to ``results/`` as they arrive. A re-run (without
``--force``) reuses a key or rubric only if the call that would make it now is the one that made
it (``provenance``): an edited question redoes its key, and so its rubric; rubrics that fell
back and await review are tried again. Instructor rubrics from ``user_rubrics.json`` are used
as-is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aita.engine import BatchResult, LLMClient, LLMTask, OpenAICompatibleClient, TaskResult
from aita.pipelines.assignment import Assignment
from aita.pipelines.exam import AnswerKey, Rubric
from aita.pipelines.execution import RunOptions, run_batch
from aita.pipelines.provenance import request_of, reusable, stamped
from aita.pipelines.result_files import ResultFile
from aita.pipelines.tasks import AnswerKeyTask, RubricTask


@dataclass
class RubricOutcome:
    answer_keys: dict[str, AnswerKey]
    rubrics: dict[str, Rubric]
    batch: BatchResult | None = None
    reused: int = 0
    failed: list[TaskResult] = field(default_factory=list)
    #: the result files this run changed
    written: list[Path] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        return [qid for qid, rubric in self.rubrics.items() if rubric.needs_review]

    @property
    def flagged_keys(self) -> list[str]:
        return [qid for qid, key in self.answer_keys.items() if key.needs_review]


def plan_rubric_tasks(
    assignment: Assignment,
    keys: ResultFile[AnswerKey],
    rubrics: ResultFile[Rubric],
    client: LLMClient,
    dry_run: bool,
) -> list[LLMTask]:
    """The tasks still to do: answer keys and rubrics with no record standing for the call that
    would make them now, and rubrics that fell back. A rubric whose key is redone depends on the
    key's task (and may still be answered from the checkpoint if the new key is the same)."""
    tasks: list[LLMTask] = []
    for question in assignment.spec.questions:
        qid = question.question_id
        general, specific = assignment.instructions, assignment.question_instructions.get(qid)
        key_task = AnswerKeyTask(question, general, specific)
        key = keys.get(qid)
        key_fell_back = key is not None and key.source == "fallback"
        key_stands = not key_fell_back and reusable(key, request_of(key_task, client), dry_run)
        if not key_stands:
            tasks.append(key_task)
        if qid in assignment.user_rubrics:
            continue
        if not key_stands:
            tasks.append(RubricTask(question, None, general, specific))
            continue
        rubric_task = RubricTask(question, key, general, specific)
        rubric = rubrics.get(qid)
        if (
            rubric is None
            or rubric.source == "fallback"
            or not reusable(rubric, request_of(rubric_task, client), dry_run)
        ):
            tasks.append(rubric_task)
    return tasks


def generate_rubrics(
    assignment: Assignment, client: OpenAICompatibleClient, options: RunOptions
) -> RubricOutcome:
    paths = assignment.results_for(options.dry_run)
    before = {path: _content(path) for path in (paths.answer_keys, paths.rubrics)}
    keys = ResultFile(paths.answer_keys, AnswerKey, fresh=not options.reuse)
    rubrics = ResultFile(paths.rubrics, Rubric, fresh=not options.reuse)
    for qid, rubric in assignment.user_rubrics.items():
        if rubrics.get(qid) != rubric:
            rubrics.put(qid, rubric)
    tasks = plan_rubric_tasks(assignment, keys, rubrics, client, options.dry_run)
    reused = 2 * len(assignment.spec.questions) - len(assignment.user_rubrics) - len(tasks)

    def save(result: TaskResult) -> None:
        if isinstance(result.result, AnswerKey):
            keys.put(result.result.question_id, stamped(result.result, result))
        elif isinstance(result.result, Rubric):
            rubrics.put(result.result.question_id, stamped(result.result, result))

    batch = None
    if tasks:
        name = options.batch_name(assignment.name, "generate-rubric")
        batch = run_batch(tasks, client, options, name, save)
    return RubricOutcome(
        answer_keys=dict(keys.records),
        rubrics=dict(rubrics.records),
        batch=batch,
        reused=reused,
        failed=batch.failed_results if batch else [],
        written=[path for path, content in before.items() if _content(path) != content],
    )


def _content(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None
