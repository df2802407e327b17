"""``aita run pipeline.yaml``: YAML pipelines of LLM steps, with parallel groups.

    name: "Study guide"
    settings: {parallel: true, max_workers: 4}
    steps:
      - name: outline
        type: text
        params: {prompt: "Outline a study guide on {{input}}"}
      - type: parallel_group
        name: materials
        max_workers: 4      # concurrent steps in this group
        fail_fast: true     # the first failure cancels the steps not yet started
        timeout: 300        # seconds for the whole group
        steps:
          - {name: quiz, type: text, input_from: outline, params: {prompt: "Quiz on: {{input}}"}}
          - {name: recap, type: text, input_from: outline, params: {prompt: "Recap {{input}}"}}

Top-level items run in order; the steps of a group run together when parallel execution is on
(``settings.parallel`` or ``PIPELINE_PARALLEL_ENABLED``), one at a time otherwise. Templates:
``{{input}}`` is the output of the step's ``input_from`` (else the ``--input`` text),
``{{pipeline_input}}`` always the ``--input`` text, ``{{steps.NAME}}`` any earlier step's output.
Everything is checked before the first call: schema errors name the step and the field, and
references to unknown or later steps and dependency cycles are refused.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aita.engine import (
    LLMClient,
    LLMMessage,
    LLMTask,
    ParallelLLMExecutor,
    RateLimiter,
    TaskGraph,
    TaskResult,
    image_to_data_url,
)
from aita.errors import AitaError, TaskGraphError, validation_problem

TEXT_TYPES = frozenset({"text", "llm", "chat", "text_generation", "text_to_text"})
VISION_TYPES = frozenset({"vision", "image_to_text", "analyze_image"})
_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_RESERVED_PARAMS = frozenset({"prompt", "system", "image"})

M = TypeVar("M", bound=BaseModel)


class PipelineError(AitaError):
    """The pipeline file is invalid; nothing was called."""


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: str
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    input_from: str | None = None

    @field_validator("type")
    @classmethod
    def _llm_types_only(cls, value: str) -> str:
        if value not in TEXT_TYPES | VISION_TYPES:
            text, vision = ", ".join(sorted(TEXT_TYPES)), ", ".join(sorted(VISION_TYPES))
            raise ValueError(
                f"unsupported step type {value!r}; aita runs LLM steps: {text} (text) "
                f"or {vision} (vision)"
            )
        return value

    @property
    def is_vision(self) -> bool:
        return self.type in VISION_TYPES


class GroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["parallel_group"]
    name: str | None = None
    max_workers: int = Field(default=4, ge=1)
    fail_fast: bool = True
    timeout: float = Field(default=300, gt=0)
    steps: list[dict[str, Any]] = Field(min_length=1)


class PipelineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parallel: bool | None = None
    max_workers: int = Field(default=4, ge=1)
    rate_limit: float | None = Field(default=None, gt=0)
    rate_limit_delay: float | None = Field(default=None, gt=0)
    model: str | None = None
    log_level: str | None = None

    @property
    def requests_per_second(self) -> float | None:
        if self.rate_limit is not None:
            return self.rate_limit
        return 1 / self.rate_limit_delay if self.rate_limit_delay else None


@dataclass
class Stage:
    """One top-level item: a single step, or a parallel group."""

    steps: list[StepSpec]
    group: GroupSpec | None = None

    @property
    def label(self) -> str:
        if self.group is None:
            return self.steps[0].name
        return self.group.name or "+".join(s.name for s in self.steps)


@dataclass
class Pipeline:
    name: str
    settings: PipelineSettings
    stages: list[Stage]
    base_dir: Path
    description: str = ""


# -- loading -----------------------------------------------------------------------------------


def load_pipeline(path: Path) -> Pipeline:
    """Parse and check a pipeline file; every problem is a one-line ``PipelineError``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PipelineError(f"{path}: cannot read ({error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PipelineError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping with 'steps'")
    unknown = sorted(set(data) - {"name", "description", "settings", "steps"})
    if unknown:
        raise PipelineError(f"{path}: unknown top-level field(s): {', '.join(unknown)}")
    settings = _validate(PipelineSettings, data.get("settings") or {}, path, "settings")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PipelineError(f"{path}: steps: a non-empty list is required")
    stages = []
    for number, raw in enumerate(raw_steps, start=1):
        where = f"step {_name_of(raw, number)}"
        if isinstance(raw, dict) and raw.get("type") == "parallel_group":
            group = _validate(GroupSpec, raw, path, where)
            steps = [
                _validate(StepSpec, s, path, f"{where} > step {_name_of(s, n)}")
                for n, s in enumerate(group.steps, start=1)
            ]
            stages.append(Stage(steps, group))
        else:
            stages.append(Stage([_validate(StepSpec, raw, path, where)]))
    pipeline = Pipeline(
        name=str(data.get("name") or path.stem),
        description=str(data.get("description") or ""),
        settings=settings,
        stages=stages,
        base_dir=path.parent,
    )
    _check_references(pipeline, path)
    return pipeline


def _name_of(raw: Any, number: int) -> str:
    if isinstance(raw, dict) and raw.get("name"):
        return repr(str(raw["name"]))
    return f"#{number}"


def _validate(model: type[M], raw: Any, path: Path, where: str) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        field_name, problem = validation_problem(error)
        raise PipelineError(f"{path}: {where}: {field_name or '(value)'}: {problem}") from None


def _references(step: StepSpec) -> tuple[set[str], set[str]]:
    """(steps it reads, unknown template variables)."""
    reads = {step.input_from} if step.input_from else set()
    unknown = set()
    for value in step.params.values():
        if not isinstance(value, str):
            continue
        for variable in _TEMPLATE.findall(value):
            if variable.startswith("steps."):
                reads.add(variable.removeprefix("steps."))
            elif variable not in {"input", "pipeline_input"}:
                unknown.add(variable)
    return reads, unknown


def _check_references(pipeline: Pipeline, path: Path) -> None:
    stage_of: dict[str, int] = {}
    for n, stage in enumerate(pipeline.stages):
        for step in stage.steps:
            if step.name in stage_of:
                raise PipelineError(f"{path}: step {step.name!r}: name: used by another step")
            stage_of[step.name] = n
    for n, stage in enumerate(pipeline.stages):
        for step in stage.steps:
            if step.is_vision and not step.params.get("image"):
                raise PipelineError(f"{path}: step {step.name!r}: params.image: required")
            if not step.is_vision and not step.params.get("prompt") and not step.input_from:
                raise PipelineError(f"{path}: step {step.name!r}: params.prompt: required")
            reads, unknown = _references(step)
            if unknown:
                raise PipelineError(
                    f"{path}: step {step.name!r}: params: unknown template variable(s) "
                    f"{', '.join(sorted(unknown))} (use input, pipeline_input or steps.NAME)"
                )
            for ref in sorted(reads):
                if ref not in stage_of:
                    raise PipelineError(
                        f"{path}: step {step.name!r}: refers to unknown step {ref!r}"
                    )
                if stage_of[ref] > n:
                    raise PipelineError(
                        f"{path}: step {step.name!r}: refers to {ref!r}, which runs later"
                    )
        try:
            TaskGraph.build(stage_tasks(pipeline, stage, {}, ""))
        except TaskGraphError as error:
            raise PipelineError(f"{path}: {error}") from None


# -- running -----------------------------------------------------------------------------------


class StepTask(LLMTask):
    """One pipeline step as an executor task; same-stage references are its dependencies."""

    def __init__(
        self,
        step: StepSpec,
        base_dir: Path,
        earlier: Mapping[str, str],
        pipeline_input: str,
        same_stage: set[str],
        default_model: str | None,
    ) -> None:
        self.step = step
        self.base_dir = base_dir
        self.earlier = earlier
        self.pipeline_input = pipeline_input
        self.dependencies = tuple(sorted(same_stage))
        self.model = step.model or default_model

    @property
    def task_id(self) -> str:
        return self.step.name

    def _outputs(self) -> dict[str, str]:
        return {**self.earlier, **{k: str(v) for k, v in self.dependency_results.items()}}

    def render(self, text: str) -> str:
        outputs = self._outputs()
        own_input = outputs.get(self.step.input_from or "", self.pipeline_input)

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "input":
                return own_input
            if name == "pipeline_input":
                return self.pipeline_input
            return outputs.get(name.removeprefix("steps."), "")

        return _TEMPLATE.sub(value, text)

    def build_messages(self) -> list[LLMMessage]:
        params = self.step.params
        prompt = self.render(str(params.get("prompt") or "{{input}}"))
        messages = []
        if params.get("system"):
            messages.append(LLMMessage("system", self.render(str(params["system"]))))
        if self.step.is_vision:
            image = str(params["image"])
            local = (
                image
                if image.startswith(("http://", "https://", "data:"))
                else self.base_dir / image
            )
            parts: list[dict[str, Any]] = [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": image_to_data_url(local)}},
            ]
            messages.append(LLMMessage("user", parts))
        else:
            messages.append(LLMMessage("user", prompt))
        return messages

    def get_llm_params(self) -> dict[str, Any]:
        params = {k: v for k, v in self.step.params.items() if k not in _RESERVED_PARAMS}
        if self.model:
            params["model"] = self.model
        return params


def stage_tasks(
    pipeline: Pipeline, stage: Stage, outputs: Mapping[str, str], pipeline_input: str
) -> list[StepTask]:
    names = {s.name for s in stage.steps}
    return [
        StepTask(
            step,
            pipeline.base_dir,
            outputs,
            pipeline_input,
            _references(step)[0] & names,
            pipeline.settings.model,
        )
        for step in stage.steps
    ]


@dataclass
class StepRecord:
    status: Literal["succeeded", "failed", "skipped"]
    output: str | None = None
    error: str | None = None
    duration: float = 0.0
    tokens: int = 0
    cost: float = 0.0
    model: str | None = None


@dataclass
class PipelineRun:
    pipeline: str
    parallel: bool
    steps: dict[str, StepRecord] = field(default_factory=dict)
    total_duration: float = 0.0

    @property
    def sequential_estimate(self) -> float:
        return sum(r.duration for r in self.steps.values())

    @property
    def speedup(self) -> float:
        return self.sequential_estimate / self.total_duration if self.total_duration else 0.0

    @property
    def succeeded(self) -> bool:
        return all(r.status == "succeeded" for r in self.steps.values())

    def to_json(self, pipeline_input: str) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "input": pipeline_input,
            "parallel": self.parallel,
            "succeeded": self.succeeded,
            "total_duration": round(self.total_duration, 3),
            "sequential_estimate": round(self.sequential_estimate, 3),
            "speedup": round(self.speedup, 2),
            "steps": {name: vars(record) for name, record in self.steps.items()},
        }


def run_pipeline(
    pipeline: Pipeline,
    client: LLMClient,
    pipeline_input: str = "",
    *,
    parallel: bool,
    report: Callable[[str], object] = print,
    max_workers: int | None = None,
    rate_limit: float | None = None,
    max_retries: int | None = None,
) -> PipelineRun:
    """Run the stages in order; ``report`` receives the progress lines."""
    run = PipelineRun(pipeline=pipeline.name, parallel=parallel)
    limiter = RateLimiter(rate_limit or pipeline.settings.requests_per_second)
    outputs: dict[str, str] = {}
    stopped_by: str | None = None
    started = time.perf_counter()
    for stage in pipeline.stages:
        if stopped_by is not None:
            for step in stage.steps:
                run.steps[step.name] = StepRecord(
                    "skipped", error=f"pipeline stopped: {stopped_by}"
                )
            continue
        failed = _run_stage(
            pipeline,
            stage,
            run,
            outputs,
            pipeline_input,
            parallel,
            report,
            limiter,
            max_workers,
            max_retries,
            client,
        )
        if failed and (stage.group is None or stage.group.fail_fast):
            stopped_by = f"{failed} failed"
    run.total_duration = time.perf_counter() - started
    report(
        f"[INFO] Pipeline '{pipeline.name}' finished in {run.total_duration:.2f}s "
        f"(sequential estimate {run.sequential_estimate:.2f}s, speedup {run.speedup:.2f}x)"
    )
    return run


def _run_stage(
    pipeline: Pipeline,
    stage: Stage,
    run: PipelineRun,
    outputs: dict[str, str],
    pipeline_input: str,
    parallel: bool,
    report: Callable[[str], object],
    limiter: RateLimiter,
    max_workers: int | None,
    max_retries: int | None,
    client: LLMClient,
) -> str | None:
    """Run one stage; returns the name of the first step that ran and failed, if any."""
    tasks: list[LLMTask] = []
    for task in stage_tasks(pipeline, stage, outputs, pipeline_input):
        reads = _references(task.step)[0]
        missing = sorted(r for r in reads if r in run.steps and r not in outputs)
        if missing:
            reason = f"skipped: {missing[0]!r} has no output"
            run.steps[task.task_id] = StepRecord("skipped", error=reason)
        else:
            tasks.append(task)
    if not tasks:
        return None  # skipped for want of input: that failure was reported where it happened
    group = stage.group
    width = 1
    if parallel and group is not None:
        width = min(
            group.max_workers, pipeline.settings.max_workers, max_workers or group.max_workers
        )
    total = len(tasks)
    numbers: dict[str, int] = {}
    if group is not None:
        mode = "parallel group" if parallel else "group (sequentially: parallel execution is off)"
        report(f"[INFO] Starting {mode} '{stage.label}' with {total} steps")

    def on_start(task: LLMTask) -> None:
        numbers[task.task_id] = len(numbers) + 1
        report(f"[INFO] [{numbers[task.task_id]}/{total}] Started: {task.task_id}")

    def on_done(result: TaskResult) -> None:
        n = numbers.get(result.task_id, 0)
        if result.success:
            report(f"[INFO] [{n}/{total}] Completed: {result.task_id} ({result.call_time:.1f}s)")
        else:
            report(f"[ERROR] [{n}/{total}] Failed: {result.task_id}: {result.error}")

    executor = ParallelLLMExecutor(
        client,
        max_workers=width,
        rate_limiter=limiter,
        enable_checkpointing=False,
        show_progress=False,
        max_retries=max_retries,
    )
    stage_started = time.perf_counter()
    batch = executor.execute_batch(
        tasks,
        on_task_complete=on_done,
        on_task_start=on_start,
        fail_fast=group.fail_fast if group is not None else False,
        timeout=group.timeout if group is not None else None,
    )
    first_failure = None
    for result in batch.task_results:
        record = StepRecord(
            "succeeded" if result.success else "failed",
            output=result.result if result.success else None,
            error=result.error,
            duration=result.call_time,
            tokens=result.tokens,
            cost=result.cost,
            model=result.model,
        )
        if result.error_type in {"DependencyFailed", "Cancelled"}:
            record.status = "skipped"
        run.steps[result.task_id] = record
        if result.success:
            outputs[result.task_id] = str(result.result)
        elif first_failure is None and record.status == "failed":
            first_failure = result.task_id
    if group is not None:
        took = time.perf_counter() - stage_started
        sequential = sum(r.call_time for r in batch.task_results)
        report(f"[INFO] Parallel group completed in {took:.1f}s (vs {sequential:.1f}s sequential)")
    return first_failure
