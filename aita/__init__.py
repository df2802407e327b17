"""aita: run large batches of LLM calls in parallel, fast and safely."""

from aita.config import AitaConfig, ParallelExecutionConfig, get_config, load_config
from aita.errors import (
    AitaError,
    AuthenticationFailed,
    BadRequest,
    CheckpointError,
    ConfigError,
    DependencyFailed,
    EmptyResponse,
    InvalidResponse,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    ResponseParseError,
    TaskGraphError,
)
from aita.services.llm.base import LLMClient, LLMMessage, LLMResponse, Usage
from aita.services.llm.openrouter import OpenAICompatibleClient, create_openrouter_client
from aita.simulator import ProviderSimulator, SimulatorConfig
from aita.utils.checkpoint import Checkpoint, CheckpointManager, TaskRecord
from aita.utils.llm_tasks import BatchableLLMTask, LLMTask, SimpleLLMTask, VisionLLMTask
from aita.utils.parallel_executor import (
    BatchInterrupted,
    BatchResult,
    ExecutionMetrics,
    ParallelLLMExecutor,
    TaskResult,
    create_executor,
)
from aita.utils.rate_limiter import NoOpRateLimiter, RateLimiter
from aita.utils.retry import ExponentialBackoff
from aita.workflows.parallel_map import parallel_map_with_delay

__version__ = "0.1.0"

__all__ = [
    "AitaConfig",
    "AitaError",
    "AuthenticationFailed",
    "BadRequest",
    "BatchInterrupted",
    "BatchResult",
    "BatchableLLMTask",
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "ConfigError",
    "DependencyFailed",
    "EmptyResponse",
    "ExecutionMetrics",
    "ExponentialBackoff",
    "InvalidResponse",
    "LLMClient",
    "LLMMessage",
    "LLMResponse",
    "LLMTask",
    "ModelNotFound",
    "NoOpRateLimiter",
    "OpenAICompatibleClient",
    "ParallelExecutionConfig",
    "ParallelLLMExecutor",
    "ProviderError",
    "ProviderSimulator",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RateLimiter",
    "ResponseParseError",
    "SimpleLLMTask",
    "SimulatorConfig",
    "TaskGraphError",
    "TaskRecord",
    "TaskResult",
    "Usage",
    "VisionLLMTask",
    "create_executor",
    "create_openrouter_client",
    "get_config",
    "load_config",
    "parallel_map_with_delay",
]
