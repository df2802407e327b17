"""What a batch returns: one ``TaskResult`` per task, the metrics, and where the checkpoint is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TaskResult:
    task_id: str
    success: bool
    result: Any = None
    raw_response: str | None = None
    error: str | None = None
    error_type: str | None = None
    retry_count: int = 0
    #: seconds from the task's first turn at the rate limiter to its end (backoffs included)
    execution_time: float = 0.0
    #: seconds spent inside calls to the provider, over every attempt
    call_time: float = 0.0
    tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    model: str | None = None
    used_fallback: bool = False
    from_checkpoint: bool = False
    #: answered as part of a combined call of ``BatchableLLMTask``s (``raw_response`` is None)
    batched: bool = False
    exception: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass
class ExecutionMetrics:
    """Counts are tasks unless named otherwise; times in seconds; cost in USD.

    Tokens and cost cover the calls made in this run (resumed tasks cost nothing again).
    """

    total_tasks: int = 0
    completed_tasks: int = 0
    failed_tasks: int = 0
    retried_tasks: int = 0
    total_retries: int = 0
    resumed_tasks: int = 0
    fallback_tasks: int = 0
    requests: int = 0
    rate_limited_responses: int = 0
    rate_limit_wait_time: float = 0.0
    wall_time: float = 0.0
    throughput: float = 0.0
    avg_task_time: float = 0.0
    min_task_time: float = 0.0
    max_task_time: float = 0.0
    p50_latency: float = 0.0
    p95_latency: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    total_cost: float = 0.0
    cost_by_model: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchResult:
    task_results: list[TaskResult]
    metrics: ExecutionMetrics
    checkpoint_path: Path | None = None

    @property
    def successful_results(self) -> list[TaskResult]:
        return [r for r in self.task_results if r.success]

    @property
    def failed_results(self) -> list[TaskResult]:
        return [r for r in self.task_results if not r.success]

    @property
    def success_rate(self) -> float:
        """Percent of tasks that succeeded (100.0 for an empty batch)."""
        if not self.task_results:
            return 100.0
        return 100.0 * len(self.successful_results) / len(self.task_results)

    def get_result_by_id(self, task_id: str) -> TaskResult | None:
        return next((r for r in self.task_results if r.task_id == task_id), None)
