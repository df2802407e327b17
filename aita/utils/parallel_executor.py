"""Re-exports the executor from ``aita.engine``, for code written against the guide."""

from aita.engine import (
    BatchInterrupted,
    BatchResult,
    ExecutionMetrics,
    ParallelLLMExecutor,
    TaskResult,
    create_executor,
)

__all__ = [
    "BatchInterrupted",
    "BatchResult",
    "ExecutionMetrics",
    "ParallelLLMExecutor",
    "TaskResult",
    "create_executor",
]
