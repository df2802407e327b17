"""The client for any OpenAI-compatible endpoint (OpenRouter by default), over the openai SDK.

The SDK's own retries are switched off: the executor has the one retry loop, so every attempt is
counted once and a 429 can pause every worker. SDK errors are translated into aita's error tree
here, by HTTP status, with the API key redacted from anything that could be printed or saved.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import openai

from aita.config import get_config
from aita.engine._client import LLMMessage, LLMResponse, Usage
from aita.errors import (
    AuthenticationFailed,
    BadRequest,
    ConfigError,
    EmptyResponse,
    InvalidResponse,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)

REDACTED = "[redacted]"


class OpenAICompatibleClient:
    """``complete(messages, **params)`` over the ``openai`` SDK.

    ``params`` go into the request body as given (``temperature``, ``response_format``,
    provider-specific fields such as OpenRouter's ``usage``); ``model`` overrides the default.
    """

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str,
        timeout: float = 120.0,
        default_headers: dict[str, str] | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self._secret = api_key
        self._sdk = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            default_headers=default_headers,
        )
        # Resolve the SDK's lazily imported resources now, not inside the first timed call.
        self._completions = self._sdk.chat.completions.with_raw_response

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._sdk.close()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        model = params.pop("model", None) or self.model
        try:
            raw = self._completions.create(
                model=model,
                messages=[m.to_openai() for m in messages],  # type: ignore[misc]
                extra_body=params or None,
            )
            headers = {k.lower(): v for k, v in raw.headers.items()}
            completion = raw.parse()
        except openai.APITimeoutError:
            raise ProviderTimeout(
                f"no response within {self.timeout:g}s from {self.base_url}"
            ) from None
        except openai.APIConnectionError as error:
            raise ProviderUnavailable(self._redact(f"connection failed: {error}")) from None
        except openai.APIStatusError as error:
            raise self._translate_status(error) from None
        except (openai.APIError, ValueError) as error:
            raise InvalidResponse(self._redact(f"malformed response body: {error}")) from None
        if not getattr(completion, "choices", None):
            raise InvalidResponse("response has no choices")
        choice = completion.choices[0]
        content = choice.message.content if choice.message is not None else None
        if content is None or not content.strip():
            raise EmptyResponse(f"empty completion (finish_reason={choice.finish_reason})")
        return LLMResponse(
            content=content,
            usage=_usage_of(completion),
            model=completion.model or model,
            finish_reason=choice.finish_reason,
            headers=headers,
        )

    def _translate_status(self, error: openai.APIStatusError) -> ProviderError:
        message = _provider_message(error.body) or error.message
        headers = {k.lower(): v for k, v in error.response.headers.items()}
        return error_for_status(error.status_code, self._redact(message), headers)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, REDACTED) if self._secret else text


def error_for_status(status: int, message: str, headers: dict[str, str]) -> ProviderError:
    """The one table that maps an HTTP status to an aita error (and so to a retry decision)."""
    wait = retry_after(headers)
    error_type: type[ProviderError]
    if status == 429:
        error_type = RateLimited
    elif status in (408, 409) or status >= 500:
        error_type = ProviderUnavailable
    elif status in (401, 403):
        error_type = AuthenticationFailed
    elif status == 404:
        error_type = ModelNotFound
    else:
        error_type = BadRequest
    limits = {k: v for k, v in headers.items() if k.startswith(("x-ratelimit-", "retry-after"))}
    return error_type(message, status_code=status, retry_after=wait, headers=limits)


def retry_after(headers: dict[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``retry-after``."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (now if now is not None else time.time()))


def _provider_message(body: object) -> str | None:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return None


def _usage_of(completion: Any) -> Usage:
    usage = getattr(completion, "usage", None)
    if usage is None:
        return Usage()
    extra = getattr(usage, "model_extra", None) or {}
    cost = getattr(usage, "cost", None) if "cost" not in extra else extra["cost"]
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    total = int(getattr(usage, "total_tokens", 0) or prompt + completion_tokens)
    return Usage(prompt, completion_tokens, total, float(cost) if cost is not None else None)


def create_openrouter_client(
    api_key: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    timeout: float | None = None,
    default_headers: dict[str, str] | None = None,
) -> OpenAICompatibleClient:
    """A client for OpenRouter, or any OpenAI-compatible server given its ``base_url``.

    Unset arguments come from the settings (``OPENROUTER_API_KEY``, ``AITA_MODEL``,
    ``AITA_BASE_URL``, ``AITA_REQUEST_TIMEOUT``). Local servers (vLLM, Ollama, llama.cpp) accept
    any key; pass ``api_key="local"``.
    """
    llm = get_config().llm
    key = (
        api_key
        if api_key is not None
        else (llm.api_key.get_secret_value() if llm.api_key else None)
    )
    if not key:
        raise ConfigError(
            "no API key: set OPENROUTER_API_KEY in the environment or .env "
            "(or pass api_key=...; local servers accept any value)"
        )
    return OpenAICompatibleClient(
        api_key=key,
        model=model or llm.model,
        base_url=base_url or llm.base_url,
        timeout=timeout if timeout is not None else llm.request_timeout,
        default_headers=default_headers,
    )
