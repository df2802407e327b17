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

import logging
import re
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aita.engine import (
    BatchResult,
    LLMClient,
    LLMMessage,
    LLMResponse,
    LLMTask,
    ParallelLLMExecutor,
    RateLimiter,
    TaskGraph,
    TaskResult,
    image_to_data_url,
    outcome_of,
)
from aita.errors import AitaError, Cancelled, DependencyFailed, TaskGraphError, validation_problem
from aita.workflows.service_time import sequential_seconds

log = logging.getLogger("aita.run")

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
    #: files outside ``base_dir`` may be read (``--allow-outside-paths``)
    allow_outside_paths: bool = False


# -- loading -----------------------------------------------------------------------------------

#: the largest pipeline file read (a pipeline is a page of YAML, not a data set)
MAX_PIPELINE_BYTES = 1_000_000
#: the largest image a vision step sends (providers refuse larger ones anyway)
MAX_IMAGE_BYTES = 20_000_000


class _PipelineLoader(yaml.SafeLoader):
    """Safe YAML without aliases: ``*name`` can repeat a large node many times over (nine
    nested aliases in 658 bytes expand to gigabytes), and no pipeline needs one."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a pipeline", event.start_mark
            )
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


def load_pipeline(path: Path, *, allow_outside_paths: bool = False) -> Pipeline:
    """Parse and check a pipeline file; every problem is a one-line ``PipelineError``.

    The file must be a regular file under ``MAX_PIPELINE_BYTES``, with no YAML aliases. Every
    file a step reads (a vision step's image) must be a regular file under
    ``MAX_IMAGE_BYTES`` inside the pipeline's folder (anywhere with ``allow_outside_paths``):
    all checked here, before any call."""
    data = _parse(_read_pipeline_file(path), path)
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping with 'steps'")
    unknown = sorted(set(map(str, data)) - {"name", "description", "settings", "steps"})
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
        allow_outside_paths=allow_outside_paths,
    )
    _check_references(pipeline, path)
    _check_files(pipeline, path)
    return pipeline


def _read_pipeline_file(path: Path) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except OSError as error:
        raise PipelineError(f"{path}: cannot read ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block, /dev/zero never end
        raise PipelineError(f"{path}: not a regular file")
    if info.st_size > MAX_PIPELINE_BYTES:
        raise PipelineError(f"{path}: larger than {MAX_PIPELINE_BYTES // 1_000_000} MB")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PIPELINE_BYTES + 1)
    except OSError as error:
        raise PipelineError(f"{path}: cannot read ({error.strerror})") from None
    if len(data) > MAX_PIPELINE_BYTES:  # it grew after the check
        raise PipelineError(f"{path}: larger than {MAX_PIPELINE_BYTES // 1_000_000} MB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PipelineError(f"{path}: not UTF-8 text ({error.reason})") from None


def _parse(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_PipelineLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PipelineError(f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise PipelineError(f"{path}: invalid YAML: nested too deeply") from None


def _check_files(pipeline: Pipeline, path: Path) -> None:
    for stage in pipeline.stages:
        for step in stage.steps:
            image = step.params.get("image")
            if step.is_vision and not _is_url(str(image)):
                try:
                    image_file(pipeline, str(image))
                except ValueError as error:
                    raise PipelineError(
                        f"{path}: step {step.name!r}: params.image: {error}"
                    ) from None


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "data:"))


def image_file(pipeline: Pipeline, image: str) -> Path:
    """The file a vision step's ``image`` names, resolved (symlinks followed); ``ValueError``
    saying why if it is missing, not a regular file, too large, or outside the pipeline's
    folder (unless the pipeline allows that)."""
    folder = pipeline.base_dir.resolve()
    try:
        target = (pipeline.base_dir / image).resolve(strict=True)
    except FileNotFoundError:
        raise ValueError(f"{image}: no such file") from None
    except (OSError, RuntimeError) as error:  # a symlink loop, a name too long
        raise ValueError(f"{image}: cannot be read ({error})") from None
    if not pipeline.allow_outside_paths and not target.is_relative_to(folder):
        raise ValueError(
            f"{image}: outside the pipeline's folder {folder} "
            "(--allow-outside-paths allows files elsewhere)"
        )
    info = target.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{image}: not a regular file")
    if info.st_size > MAX_IMAGE_BYTES:
        raise ValueError(f"{image}: larger than {MAX_IMAGE_BYTES // 1_000_000} MB")
    return target


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


def pipeline_input_variable(pipeline: Pipeline) -> str | None:
    """The template variable through which a step reads the pipeline's input text, as
    ``render`` fills it: ``{{input}}`` in a step with no ``input_from`` (a step with no prompt
    has ``{{input}}`` for one), or ``{{pipeline_input}}`` in any step. None: no step reads it."""
    for stage in pipeline.stages:
        for step in stage.steps:
            params = step.params
            texts = [str(params.get("prompt") or "{{input}}"), str(params.get("system") or "")]
            reading = {"pipeline_input"} if step.input_from else {"input", "pipeline_input"}
            for text in texts:
                for variable in _TEMPLATE.findall(text):
                    if variable in reading:
                        return str(variable)
    return None


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
    """One pipeline step as an executor task; same-stage references are its dependencies.

    Its messages carry everything the step reads (the rendered prompt with the outputs it
    uses, the image's bytes) and its parameters the model, so its request key changes when
    any of its inputs does: a resumed run answers an unchanged step from the checkpoint and
    runs a changed one again."""

    def __init__(
        self,
        step: StepSpec,
        pipeline: Pipeline,
        earlier: Mapping[str, str],
        pipeline_input: str,
        same_stage: set[str],
    ) -> None:
        self.step = step
        self.pipeline = pipeline
        self.earlier = earlier
        self.pipeline_input = pipeline_input
        self.dependencies = tuple(sorted(same_stage))
        self.model = step.model or pipeline.settings.model
        #: why this step will not run (a step it reads has no output, the pipeline stopped)
        self.blocked: Exception | None = None

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
        if self.blocked is not None:
            raise self.blocked
        params = self.step.params
        prompt = self.render(str(params.get("prompt") or "{{input}}"))
        messages = []
        if params.get("system"):
            messages.append(LLMMessage("system", self.render(str(params["system"]))))
        if self.step.is_vision:
            image = str(params["image"])
            url = image if _is_url(image) else image_to_data_url(image_file(self.pipeline, image))
            parts: list[dict[str, Any]] = [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": url}},
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
        StepTask(step, pipeline, outputs, pipeline_input, _references(step)[0] & names)
        for step in stage.steps
    ]


@dataclass
class StepRecord:
    #: how the step ended, in the CLI's vocabulary (``aita.outcomes``)
    status: Literal["done", "flagged", "failed", "skipped", "cancelled", "reused"]
    output: str | None = None
    error: str | None = None
    #: seconds inside calls to the provider (queueing at a busy server included)
    duration: float = 0.0
    tokens: int = 0
    cost: float = 0.0
    model: str | None = None

    @property
    def has_output(self) -> bool:
        return self.status in ("done", "flagged", "reused")


@dataclass
class PipelineRun:
    pipeline: str
    parallel: bool
    steps: dict[str, StepRecord] = field(default_factory=dict)
    total_duration: float = 0.0
    #: seconds the calls made would have taken one after another (their service times);
    #: None when no call was made
    sequential_estimate: float | None = None
    checkpoint_path: Path | None = None
    #: the executor batches the stages ran (their metrics: calls, tokens, cost)
    batches: list[BatchResult] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        """Sequential estimate over the time taken; None when fewer than two calls were made
        (one call has nothing to overlap with: its ratio would measure only overhead)."""
        if not self.sequential_estimate or self.total_duration <= 0 or self.calls < 2:
            return None
        return self.sequential_estimate / self.total_duration

    @property
    def calls(self) -> int:
        return sum(batch.metrics.requests for batch in self.batches)

    @property
    def succeeded(self) -> bool:
        return all(r.has_output for r in self.steps.values())

    def timing(self) -> str:
        """``sequential estimate 1.20s, speedup 1.98x``, or why there is none."""
        if self.speedup is None:
            made = "no calls" if not self.calls else "one call"
            return f"{made} made: no speedup to report"
        return f"sequential estimate {self.sequential_estimate:.2f}s, speedup {self.speedup:.2f}x"

    def to_json(self, pipeline_input: str) -> dict[str, Any]:
        estimate = self.sequential_estimate
        return {
            "pipeline": self.pipeline,
            "input": pipeline_input,
            "parallel": self.parallel,
            "succeeded": self.succeeded,
            "total_duration": round(self.total_duration, 3),
            "sequential_estimate": round(estimate, 3) if estimate is not None else None,
            "speedup": round(self.speedup, 2) if self.speedup is not None else None,
            "steps": {name: vars(record) for name, record in self.steps.items()},
        }


class _CallClock:
    """The client, timed: when each call started and ended, for the sequential estimate."""

    def __init__(self, client: LLMClient) -> None:
        self.client = client
        self.calls: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        return getattr(self.client, "model", None)

    @property
    def base_url(self) -> Any:
        return getattr(self.client, "base_url", None)

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        started = time.perf_counter()
        try:
            return self.client.complete(messages, **params)
        finally:
            ended = time.perf_counter()
            with self._lock:
                self.calls.append((started, ended))


@dataclass
class RunSettings:
    """How the stages' executors run: workers, rate, retries, checkpoint and cache."""

    parallel: bool
    limiter: RateLimiter
    max_workers: int | None = None
    max_retries: int | None = None
    #: the journal every stage continues (None: no checkpoint, no resume)
    checkpoint_name: str | None = None
    checkpoint_dir: Path | None = None
    cache: bool | None = None


def run_pipeline(
    pipeline: Pipeline,
    client: LLMClient,
    pipeline_input: str = "",
    *,
    parallel: bool,
    max_workers: int | None = None,
    rate_limit: float | None = None,
    max_retries: int | None = None,
    checkpoint_name: str | None = None,
    resume: bool = True,
    checkpoint_dir: Path | None = None,
    cache: bool | None = None,
) -> PipelineRun:
    """Run the stages in order; progress lines go to the ``aita.run`` logger.

    With ``checkpoint_name``, every finished step is journalled as it ends, and a run under the
    same name answers a step from the journal when it asks exactly what it asked before (the
    same prompt with the same inputs, model and parameters): an interrupted pipeline run again
    calls the model only for the steps that had not finished. ``resume=False`` starts a new
    journal."""
    clock = _CallClock(client)
    settings = RunSettings(
        parallel=parallel,
        limiter=RateLimiter(rate_limit or pipeline.settings.requests_per_second),
        max_workers=max_workers,
        max_retries=max_retries,
        checkpoint_name=checkpoint_name,
        checkpoint_dir=checkpoint_dir,
        cache=cache,
    )
    run = PipelineRun(pipeline=pipeline.name, parallel=parallel)
    outputs: dict[str, str] = {}
    stopped_by: str | None = None
    started = time.perf_counter()
    for number, stage in enumerate(pipeline.stages):
        failed = _run_stage(
            pipeline,
            stage,
            run,
            outputs,
            pipeline_input,
            settings,
            clock,
            stopped_by=stopped_by,
            resume=resume or number > 0,
        )
        if stopped_by is None and failed and (stage.group is None or stage.group.fail_fast):
            stopped_by = f"{failed} failed"
    run.total_duration = time.perf_counter() - started
    if clock.calls:
        run.sequential_estimate = sequential_seconds(clock.calls)
    log.info(
        "Pipeline '%s' finished in %.2fs (%s)",
        pipeline.name,
        run.total_duration,
        run.timing(),
    )
    return run


def _run_stage(
    pipeline: Pipeline,
    stage: Stage,
    run: PipelineRun,
    outputs: dict[str, str],
    pipeline_input: str,
    settings: RunSettings,
    clock: _CallClock,
    *,
    stopped_by: str | None,
    resume: bool,
) -> str | None:
    """Run one stage; returns the name of the first step that ran and failed, if any.

    Steps that cannot run (the pipeline stopped, or a step they read has no output) go through
    the executor too, failing before any call, so the checkpoint records them as the run
    reports them: cancelled or skipped."""
    tasks = stage_tasks(pipeline, stage, outputs, pipeline_input)
    _block(tasks, run, outputs, stopped_by)
    ready = [t for t in tasks if t.blocked is None]
    blocked = [t for t in tasks if t.blocked is not None]
    group = stage.group
    width = 1
    if settings.parallel and group is not None:
        width = min(
            group.max_workers,
            pipeline.settings.max_workers,
            settings.max_workers or group.max_workers,
        )
    total = len(tasks)
    numbers: dict[str, int] = {}
    if group is not None and ready:
        mode = (
            "parallel group"
            if settings.parallel
            else "group (sequentially: parallel execution is off)"
        )
        log.info("Starting %s '%s' with %d steps", mode, stage.label, len(ready))

    def on_start(task: LLMTask) -> None:
        numbers[task.task_id] = len(numbers) + 1
        log.info("[%d/%d] Started: %s", numbers[task.task_id], total, task.task_id)

    def on_done(result: TaskResult) -> None:
        n, name = numbers.get(result.task_id, 0), result.task_id
        outcome = outcome_of(result)
        if outcome in ("done", "flagged"):
            how = " (cut off at the token limit)" if outcome == "flagged" else ""
            log.info("[%d/%d] Completed: %s (%.1fs)%s", n, total, name, result.call_time, how)
        elif outcome == "reused":
            log.info("[%d/%d] Reused: %s (unchanged since an earlier run)", n, total, name)
        elif outcome == "failed":
            log.error("[%d/%d] Failed: %s: %s", n, total, name, (result.error or ""))
        else:
            reason = (result.error or "").removeprefix(f"{outcome}: ")
            log.warning("%s %s: %s", outcome.capitalize(), name, reason)

    def executor(width: int) -> ParallelLLMExecutor:
        return ParallelLLMExecutor(
            clock,
            max_workers=width,
            rate_limiter=settings.limiter,
            enable_checkpointing=settings.checkpoint_name is not None,
            checkpoint_dir=settings.checkpoint_dir,
            show_progress=False,
            max_retries=settings.max_retries,
            cache=settings.cache,
        )

    results: list[TaskResult] = []
    if blocked:  # recorded first, so the journal is continued by the steps that run
        for task in blocked:
            task.dependencies = ()
        batch = executor(1).execute_batch(
            blocked,
            checkpoint_name=settings.checkpoint_name,
            resume_from_checkpoint=resume,
            on_task_complete=on_done,
        )
        results.extend(batch.task_results)
        run.batches.append(batch)
        resume = True
    first_failure = None
    if ready:
        calls_before = len(clock.calls)
        stage_started = time.perf_counter()
        batch = executor(width).execute_batch(
            ready,
            checkpoint_name=settings.checkpoint_name,
            resume_from_checkpoint=resume,
            on_task_complete=on_done,
            on_task_start=on_start,
            fail_fast=group.fail_fast if group is not None else False,
            timeout=group.timeout if group is not None else None,
        )
        run.checkpoint_path = batch.checkpoint_path or run.checkpoint_path
        results.extend(batch.task_results)
        run.batches.append(batch)
        if group is not None:
            took = time.perf_counter() - stage_started
            calls = clock.calls[calls_before:]
            sequential = (
                f"vs {sequential_seconds(calls):.1f}s sequential" if calls else "no calls made"
            )
            log.info("Parallel group completed in %.1fs (%s)", took, sequential)
    by_name = {r.task_id: r for r in results}
    for task in tasks:  # in the file's order
        result = by_name[task.task_id]
        record = StepRecord(
            outcome_of(result),
            output=str(result.result) if result.success else None,
            error=result.error,
            duration=result.call_time,
            tokens=result.tokens,
            cost=result.cost,
            model=result.model,
        )
        run.steps[task.task_id] = record
        if record.has_output:
            outputs[task.task_id] = str(result.result)
        elif first_failure is None and record.status == "failed":
            first_failure = task.task_id
    return first_failure


def _block(
    tasks: list[StepTask], run: PipelineRun, outputs: Mapping[str, str], stopped_by: str | None
) -> None:
    """Mark the steps that cannot run: all of them once the pipeline has stopped; else those
    reading a step with no output, and (in turn) those reading a blocked step of the stage."""
    if stopped_by is not None:
        for task in tasks:
            task.blocked = Cancelled(f"cancelled: the pipeline stopped ({stopped_by})")
        return
    for task in tasks:
        reads = _references(task.step)[0]
        missing = sorted(r for r in reads if r in run.steps and r not in outputs)
        if missing:
            task.blocked = DependencyFailed(f"skipped: {missing[0]!r} has no output")
    changed = True
    while changed:
        changed = False
        blocked = {t.task_id for t in tasks if t.blocked is not None}
        for task in tasks:
            needs = sorted(set(task.dependencies) & blocked)
            if task.blocked is None and needs:
                task.blocked = DependencyFailed(f"skipped: {needs[0]!r} did not run")
                changed = True
