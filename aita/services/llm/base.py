"""Re-exports the client types and provider errors from ``aita.engine``, for code written
against the guide."""

from aita.engine import (
    AuthenticationFailed,
    BadRequest,
    EmptyResponse,
    InvalidResponse,
    LLMClient,
    LLMMessage,
    LLMResponse,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    Usage,
)

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "EmptyResponse",
    "InvalidResponse",
    "LLMClient",
    "LLMMessage",
    "LLMResponse",
    "ModelNotFound",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "Usage",
]
