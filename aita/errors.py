"""One error tree for aita.

The executor decides what to retry by the *type* of an error, never by its message. Provider
errors carry the provider's own message (with any secret redacted) and, where the server gave one,
how long it asked us to wait.
"""

from __future__ import annotations


class AitaError(Exception):
    """Base of every error aita raises on purpose."""


class ConfigError(AitaError):
    """A setting is invalid; the message names the variable."""


class CheckpointError(AitaError):
    """A checkpoint file cannot be used (corrupt, foreign or from another batch)."""


class TaskGraphError(AitaError):
    """Task ids or dependencies are inconsistent; raised before any call is made."""


class ProviderError(AitaError):
    """The model provider refused or failed a request.

    ``retry_after`` is the server's requested wait in seconds (from ``retry-after-ms`` or
    ``retry-after``), or None when it gave none.
    """

    retryable = False
    label = "provider error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        #: the provider's rate-limit headers (``x-ratelimit-*``, ``retry-after*``), if any
        self.headers = headers or {}

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.label}{status}: {self.message}"


class RateLimited(ProviderError):
    """HTTP 429: the provider's rate limit was hit. Pauses dispatch for every worker."""

    label = "rate limited"
    retryable = True


class ProviderUnavailable(ProviderError):
    """5xx, 408, 409 or a broken connection: worth another try."""

    label = "provider unavailable"
    retryable = True


class ProviderTimeout(ProviderUnavailable):
    """No answer within the per-request timeout."""

    label = "timed out"


class InvalidResponse(ProviderError):
    """The provider answered 2xx with a body that is not a usable completion."""

    label = "invalid response"
    retryable = True


class EmptyResponse(InvalidResponse):
    """The completion had no content."""

    label = "empty response"


class BadRequest(ProviderError):
    """A 4xx the request itself caused: retrying would only repeat it."""

    label = "request refused"


class AuthenticationFailed(BadRequest):
    """401/403: the API key is missing, wrong or not allowed this model."""

    label = "authentication failed"


class ModelNotFound(BadRequest):
    """404: the model (or endpoint) does not exist at this provider."""

    label = "model not found"


class ResponseParseError(AitaError):
    """The task could not parse or validate the model's output; a new sample may parse.

    ``raw_response`` is the output that failed, so a retry can tell the model what was wrong.
    """

    retryable = True

    def __init__(self, message: str, raw_response: str | None = None) -> None:
        super().__init__(message)
        self.raw_response = raw_response


class DependencyFailed(AitaError):
    """A task was skipped because a task it depends on did not succeed."""


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt could succeed, judged by the error's type alone."""
    return bool(getattr(error, "retryable", False)) and isinstance(error, AitaError)
