"""One error tree for aita.

The retry policy (``aita.engine``) decides what to retry by the *type* of an error, never by
its message. Provider errors carry the provider's own message (with any secret redacted) and,
where the server gave one, how long it asked us to wait. ``validation_problem`` is the one place
that turns a pydantic validation error into a line a user can act on.
"""

from __future__ import annotations

from pydantic import ValidationError


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


class QuotaSpent(RateLimited):
    """A 429 whose wait is longer than the outage budget: the quota is spent, the batch stops
    (what finished is kept; the next run continues). The message names the provider's wait."""

    label = "quota spent"


class ProviderUnavailable(ProviderError):
    """5xx, 408, 409 or a broken connection: worth another try."""

    label = "provider unavailable"


class ProviderTimeout(ProviderUnavailable):
    """No answer within the per-request timeout (``seconds``) from ``url``."""

    label = "timed out"

    def __init__(
        self, message: str, *, url: str | None = None, seconds: float | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.seconds = seconds


class ProviderUnreachable(ProviderUnavailable):
    """The connection was refused, reset or dropped: the provider (or the way to it) is down."""

    label = "provider unreachable"


class BatchOverdue(ProviderError):
    """A Batch API batch still unfinished well past its completion window: the provider is not
    finishing it. The run stops; the batch is kept, so a later run collects it (or cancels)."""

    label = "batch overdue"


class ProviderOutage(ProviderUnavailable):
    """The provider stayed unreachable for longer than the outage budget (``AITA_OUTAGE_BUDGET``);
    the batch stopped with everything finished saved."""

    label = "provider outage"


class InvalidResponse(ProviderError):
    """The provider answered 2xx with a body that is not a usable completion."""

    label = "invalid response"


class EmptyResponse(InvalidResponse):
    """The completion had no content."""

    label = "empty response"


class ResponseTooLarge(InvalidResponse):
    """The answer was larger than ``AITA_MAX_ANSWER_BYTES``; it was not read past the limit."""

    label = "response too large"


class BadRequest(ProviderError):
    """A 4xx the request itself caused: retrying would only repeat it."""

    label = "request refused"


class AuthenticationFailed(BadRequest):
    """401/403: the API key is missing, wrong or not allowed this model."""

    label = "authentication failed"


class ModelNotFound(BadRequest):
    """404: the model (or endpoint) does not exist at this provider."""

    label = "model not found"


class EndpointNotFound(ModelNotFound):
    """404 on the chat endpoint itself (a base URL without ``/v1``): every call would get the
    same, so the batch stops as for a refused key."""

    label = "endpoint not found"


class ImagesNotSupported(BadRequest):
    """The model cannot take images: every attempt would be refused the same way."""

    label = "the model does not accept images"


class TruncatedResponse(AitaError):
    """The answer was cut off at ``max_tokens`` and the task declared that an error."""


class ResponseParseError(AitaError):
    """The task could not parse or validate the model's output; a new sample may parse.

    ``raw_response`` is the output that failed, so a retry can tell the model what was wrong.
    """

    def __init__(self, message: str, raw_response: str | None = None) -> None:
        super().__init__(message)
        self.raw_response = raw_response


class RunFailed(AitaError):
    """The run cannot go on for any task: its journal or results file cannot be written, or the
    provider was never reached. The message names the file (or URL) and the cause; what was
    saved before it resumes. The CLI exits 1."""


class ProviderNeverReached(RunFailed):
    """Nothing has ever answered: connection refused, a name that does not resolve, TLS to a
    plain-HTTP port. Waiting out an outage is for a provider that once answered."""


class DependencyFailed(AitaError):
    """A task was skipped because a task it depends on did not succeed."""


class Cancelled(AitaError):
    """A task that never started because its batch was cancelled (fail-fast or time limit)."""


def validation_problem(error: ValidationError, *, show_input: bool = True) -> tuple[str, str]:
    """The first problem of a pydantic error as (where, what).

    ``where`` is a path such as ``questions[0].points`` (empty for the whole value); ``what`` is
    the message, with the rejected value unless it was missing or ``show_input`` is off (a secret).
    """
    first = error.errors()[0]
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
    ).lstrip(".")
    what = first["msg"].removeprefix("Value error, ")
    if show_input and first["type"] != "missing":
        shown = repr(first["input"])
        what += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return where, what
