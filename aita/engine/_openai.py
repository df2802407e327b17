"""The client for any OpenAI-compatible endpoint (OpenRouter by default), over the openai SDK.

The SDK's own retries are switched off: the executor has the one retry loop, so every attempt is
counted once and a 429 can pause every worker. SDK errors are translated into aita's error tree
here, by HTTP status, with the API key redacted from anything that could be printed or saved.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any
from urllib.parse import urlsplit

import openai

from aita.config import get_config
from aita.engine._client import LLMMessage, LLMResponse, Usage
from aita.engine._structured import FormatNegotiation
from aita.errors import (
    AuthenticationFailed,
    BadRequest,
    ConfigError,
    EmptyResponse,
    ImagesNotSupported,
    InvalidResponse,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUnreachable,
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
        #: how this server takes structured output, learned on the first structured call
        self.formats = FormatNegotiation(base_url)
        #: the server's refusal of the first request with images, if it refused one
        self._refuses_images: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._sdk.close()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        """One chat completion; structured output asked the way this server takes it."""
        return self.formats.complete(self._complete, messages, params)

    def _complete(self, messages: list[LLMMessage], params: dict[str, Any]) -> LLMResponse:
        if self._refuses_images is not None and _has_images(messages):
            raise ImagesNotSupported(f"{self.model} at {self.base_url} ({self._refuses_images})")
        params = dict(params)
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
            cause = error.__cause__ or error
            raise ProviderUnreachable(
                self._redact(f"cannot connect to {self.base_url}: {cause}")
            ) from None
        except openai.APIStatusError as error:
            raise self._translate_status(error, messages) from None
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

    def _translate_status(
        self, error: openai.APIStatusError, messages: list[LLMMessage]
    ) -> ProviderError:
        message = self._redact(_provider_message(error.body) or error.message)
        headers = {k.lower(): v for k, v in error.response.headers.items()}
        status = error.status_code
        if status == 404 and not _has_version_path(self.base_url):
            message += (
                f" (the base URL {self.base_url} has no /v1: try {self.base_url.rstrip('/')}/v1)"
            )
        if status >= 400 and status != 429 and _has_images(messages) and _IMAGES.search(message):
            self._refuses_images = message
            return ImagesNotSupported(
                f"{self.model} at {self.base_url} ({message})", status_code=status
            )
        return error_for_status(status, message, headers)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, REDACTED) if self._secret else text


#: How servers say a model cannot take images: in words (vLLM, OpenAI, Ollama), or as
#: llama-cpp-python's chat template failing on list content (``(not "list")``).
_IMAGES = re.compile(r'image|vision|multi-?modal|mmproj|\(not "list"\)', re.IGNORECASE)


def _has_images(messages: list[LLMMessage]) -> bool:
    return any(
        isinstance(m.content, list) and any(p.get("type") == "image_url" for p in m.content)
        for m in messages
    )


def _has_version_path(base_url: str) -> bool:
    return bool(re.search(r"/v\d+(beta\d*)?/?($|/)", urlsplit(base_url).path))


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
    """The completion's usage, validated like any provider input (OpenRouter adds ``cost``)."""
    usage = getattr(completion, "usage", None)
    if usage is None:
        return Usage()
    fields = {
        name: getattr(usage, name, None)
        for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cost")
    }
    fields.update({k: v for k, v in (getattr(usage, "model_extra", None) or {}).items()})
    return Usage.from_dict(fields)


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
