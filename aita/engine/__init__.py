"""The engine: run many LLM tasks in parallel, throttled, retried, checkpointed.

    from aita.engine import ParallelLLMExecutor, SimpleLLMTask, create_openrouter_client

    executor = ParallelLLMExecutor(create_openrouter_client(), max_workers=10, rate_limit=15)
    result = executor.execute_batch([SimpleLLMTask("q1", "Explain GCRA.")], checkpoint_name="x")

Everything public is named here; the modules behind it are private and may change. Reading
order for one task: ``_lifecycle`` (its steps) -> ``_executor`` (the thread driver) ->
``_scheduler`` -> ``_limiter`` -> ``_client`` (and ``_openai``) -> ``_retry`` -> ``_journal``.
Opt-in beside them: ``_shared_limiter`` (one limit for many processes, in Redis), ``_cache``
(responses by request key, in SQLite) and ``_batch_api`` (tasks through a provider's Batch
API, at half price).
"""

from aita.engine._adaptive import AdaptiveRate
from aita.engine._batch_api import BATCH_DISCOUNT, cancel_batch_api, run_via_batch_api
from aita.engine._cache import ResponseCache
from aita.engine._client import SIMULATED_HEADER, LLMClient, LLMMessage, LLMResponse, Usage
from aita.engine._concurrency import ConcurrencyLimit
from aita.engine._executor import (
    BatchInterrupted,
    ExecutorSettings,
    ParallelLLMExecutor,
    ResultStream,
    create_executor,
)
from aita.engine._graph import TaskGraph
from aita.engine._images import image_to_data_url
from aita.engine._journal import Checkpoint, CheckpointJournal, CheckpointManager, TaskRecord
from aita.engine._keys import client_model, client_server, request_key
from aita.engine._ledger import SpendEntry, SpendLedger
from aita.engine._lifecycle import Lifecycle, Prepared, Settlement
from aita.engine._limiter import NoOpRateLimiter, RateLimiter
from aita.engine._openai import ENDPOINT as CHAT_ENDPOINT
from aita.engine._openai import (
    OpenAICompatibleClient,
    create_openrouter_client,
    error_for_status,
    retry_after,
)
from aita.engine._outage import OutageGate
from aita.engine._outcomes import OUTCOMES, Outcome, Tally, outcome_of, outcome_of_record
from aita.engine._pricing import PRICES_PER_MILLION, cost_of, estimate_cost
from aita.engine._results import BatchResult, ExecutionMetrics, TaskResult
from aita.engine._retry import (
    Backoff,
    Decision,
    ExponentialBackoff,
    RetryPolicy,
    is_outage,
    is_retryable,
)
from aita.engine._shared_limiter import RedisRateLimiter, default_limit_name
from aita.engine._structured import json_schema_response_format, unfenced, validate_json
from aita.engine._tasks import (
    BatchableLLMTask,
    LLMTask,
    SimpleLLMTask,
    VisionLLMTask,
    estimate_prompt_tokens,
    with_correction,
)
from aita.engine._telemetry import Telemetry
from aita.errors import (
    AitaError,
    AuthenticationFailed,
    BadRequest,
    BatchOverdue,
    Cancelled,
    CheckpointError,
    ConfigError,
    DependencyFailed,
    EmptyResponse,
    EndpointNotFound,
    ImagesNotSupported,
    InvalidResponse,
    ModelNotFound,
    ProviderError,
    ProviderNeverReached,
    ProviderOutage,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUnreachable,
    QuotaSpent,
    RateLimited,
    ResponseParseError,
    ResponseTooLarge,
    RunFailed,
    TaskGraphError,
    TruncatedResponse,
)

__all__ = [
    "BATCH_DISCOUNT",
    "CHAT_ENDPOINT",
    "OUTCOMES",
    "PRICES_PER_MILLION",
    "SIMULATED_HEADER",
    "AdaptiveRate",
    "AitaError",
    "AuthenticationFailed",
    "Backoff",
    "BadRequest",
    "BatchInterrupted",
    "BatchOverdue",
    "BatchResult",
    "BatchableLLMTask",
    "Cancelled",
    "Checkpoint",
    "CheckpointError",
    "CheckpointJournal",
    "CheckpointManager",
    "ConcurrencyLimit",
    "ConfigError",
    "Decision",
    "DependencyFailed",
    "EmptyResponse",
    "EndpointNotFound",
    "ExecutionMetrics",
    "ExecutorSettings",
    "ExponentialBackoff",
    "ImagesNotSupported",
    "InvalidResponse",
    "LLMClient",
    "LLMMessage",
    "LLMResponse",
    "LLMTask",
    "Lifecycle",
    "ModelNotFound",
    "NoOpRateLimiter",
    "OpenAICompatibleClient",
    "OutageGate",
    "Outcome",
    "ParallelLLMExecutor",
    "Prepared",
    "ProviderError",
    "ProviderNeverReached",
    "ProviderOutage",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ProviderUnreachable",
    "QuotaSpent",
    "RateLimited",
    "RateLimiter",
    "RedisRateLimiter",
    "ResponseCache",
    "ResponseParseError",
    "ResponseTooLarge",
    "ResultStream",
    "RetryPolicy",
    "RunFailed",
    "Settlement",
    "SimpleLLMTask",
    "SpendEntry",
    "SpendLedger",
    "Tally",
    "TaskGraph",
    "TaskGraphError",
    "TaskRecord",
    "TaskResult",
    "Telemetry",
    "TruncatedResponse",
    "Usage",
    "VisionLLMTask",
    "cancel_batch_api",
    "client_model",
    "client_server",
    "cost_of",
    "create_executor",
    "create_openrouter_client",
    "default_limit_name",
    "error_for_status",
    "estimate_cost",
    "estimate_prompt_tokens",
    "image_to_data_url",
    "is_outage",
    "is_retryable",
    "json_schema_response_format",
    "outcome_of",
    "outcome_of_record",
    "request_key",
    "retry_after",
    "run_via_batch_api",
    "unfenced",
    "validate_json",
    "with_correction",
]
