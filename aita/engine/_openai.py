"""The client for any OpenAI-compatible endpoint (OpenRouter by default).

Chat completions go over aiohttp (``_http``: many calls in flight on one event loop, a total
deadline per call); Files and Batches over the openai SDK, whose own retries are switched off:
the executor has the one retry loop, so every attempt is counted once and a 429 can pause every
worker. Errors of either path are translated into aita's error tree here, by HTTP status, with
the text the SDK would give.

What the provider sends is not trusted. A body (answer or error) is read only up to
``max_answer_bytes`` (``AITA_MAX_ANSWER_BYTES``), decompressed size included: a larger one is a
``ResponseTooLarge`` and is never held whole in memory. The body is parsed here, and any shape
that is not a completion is an ``InvalidResponse``. The API key, and any run of
``KEY_FRAGMENT`` of its characters, is redacted from answers (they are kept in results and
checkpoints) and from error messages, which are also one line of at most
``MAX_MESSAGE_CHARS``. Credentials in the base URL are never shown: ``base_url`` is the URL
without them.
"""

from __future__ import annotations

import email.utils
import functools
import importlib.metadata
import logging
import re
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import httpx2
import openai
import orjson

from aita.config import DEFAULT_BASE_URL, get_config
from aita.engine._client import LLMMessage, LLMResponse, Usage
from aita.engine._http import BodyCap, BodyTooLarge, ChatHTTP, LoopThread, open_body
from aita.engine._shared_limiter import redact_url
from aita.engine._structured import FormatNegotiation
from aita.errors import (
    AuthenticationFailed,
    BadRequest,
    ConfigError,
    EmptyResponse,
    EndpointNotFound,
    ImagesNotSupported,
    InvalidResponse,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUnreachable,
    RateLimited,
    ResponseTooLarge,
)
from aita.terminal import printable

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
#: Any run of this many characters of the API key is redacted (the whole key, if shorter): a
#: key echoed with a character dropped is still caught, a common prefix (``sk-or-v1-``) is not.
KEY_FRAGMENT = 12
#: A key shorter than this is a placeholder (``local``, ``dry-run``), not a secret to redact.
MIN_SECRET = 8
#: Provider text in an error message is cut to this many characters, on one line.
MAX_MESSAGE_CHARS = 500
#: A model name from the provider is cut to this many characters.
MAX_MODEL_CHARS = 200
#: The one chat endpoint, for live calls and Batch API lines alike.
ENDPOINT: Final = "/v1/chat/completions"


class OpenAICompatibleClient:
    """``complete(messages, **params)`` (and ``acomplete`` on an event loop) over aiohttp.

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
        max_answer_bytes: int | None = None,
    ) -> None:
        self.model = model
        #: the base URL as it may be shown: without user, password or query
        self.base_url = redact_url(base_url, hide="")
        self.timeout = timeout
        #: the largest body (answer or error) read from the provider, in bytes
        self.max_answer_bytes = max_answer_bytes or get_config().llm.max_answer_bytes
        self._redact = Redactor(api_key, base_url)
        self._sdk_settings = (api_key, base_url, default_headers)
        self._sdk: openai.OpenAI | None = None
        self._sdk_lock = threading.Lock()
        self.http = ChatHTTP(
            base_url,
            shown_url=self.base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Accept-Encoding": "gzip",  # only what BodyCap decodes within its limit
                "User-Agent": f"aita/{_version()}",
                **(default_headers or {}),
            },
            timeout=timeout,
            max_body=self.max_answer_bytes,
        )
        self._background = LoopThread("aita-http")
        # A client dropped without close() still closes its connections and background loop.
        self._closer = weakref.finalize(self, self._background.close, self.http)
        #: how this server takes structured output, learned on the first structured call
        self.formats = FormatNegotiation(self.base_url)
        #: the server's refusal of the first request with images, if it refused one
        self._refuses_images: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def sdk(self) -> openai.OpenAI:
        """The openai SDK client (its connections, key and base URL), for the endpoints aita
        calls besides chat completions (files and batches: ``_batch_api``); made on first use."""
        with self._sdk_lock:
            if self._sdk is None:
                api_key, base_url, default_headers = self._sdk_settings
                self._sdk = openai.OpenAI(
                    api_key=api_key,
                    base_url=base_url,
                    timeout=self.timeout,
                    max_retries=0,
                    default_headers=default_headers,
                    http_client=openai.DefaultHttpxClient(
                        verify=_tls_context(),
                        # only what _CappedBody can decode within its limit
                        headers={"accept-encoding": "gzip"},
                        event_hooks={"response": [_capped_body(self.max_answer_bytes)]},
                    ),
                )
            return self._sdk

    def redact(self, text: str) -> str:
        """``text`` with this client's key (and any long fragment of it) and the base URL's
        credentials taken out."""
        return self._redact(text)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._closer()
        self.http.close()
        if self._sdk is not None:
            self._sdk.close()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        """One chat completion; structured output asked the way this server takes it. Runs on
        the client's background event loop (one HTTP path for every caller)."""
        return self.formats.complete(self._complete, messages, params)

    async def acomplete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        """``complete`` on the running event loop: the executor's loop driver calls this."""
        return await self.formats.acomplete(self._acomplete, messages, params)

    def _complete(self, messages: list[LLMMessage], params: dict[str, Any]) -> LLMResponse:
        return self._background.run(self._acomplete(messages, params))

    async def _acomplete(self, messages: list[LLMMessage], params: dict[str, Any]) -> LLMResponse:
        if self._refuses_images is not None and _has_images(messages):
            raise ImagesNotSupported(f"{self.model} at {self.base_url} ({self._refuses_images})")
        params = dict(params)
        model = params.pop("model", None) or self.model
        body = {"messages": [m.to_openai() for m in messages], "model": model, **params}
        try:
            status, headers, content = await self.http.post(orjson.dumps(body))
        except ProviderUnreachable as error:
            raise ProviderUnreachable(provider_text(error.message, self._redact)) from None
        except (BodyTooLarge, ValueError) as error:
            raise translate_error(error, self.base_url, self.timeout, self._redact) from None
        if status >= 400:
            raise self._translate_status(status, content, headers, messages)
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError as error:
            raise InvalidResponse(
                provider_text(f"malformed response body: {error}", self._redact)
            ) from None
        return read_completion(data, self._redact, model, headers)

    def _translate_status(
        self, status: int, body: bytes, headers: dict[str, str], messages: list[LLMMessage]
    ) -> ProviderError:
        data, message = _error_body(status, body)
        translated = status_error(status, data, message, headers, self.base_url, self._redact)
        message = translated.message
        if status >= 400 and status != 429 and _has_images(messages) and _IMAGES.search(message):
            self._refuses_images = message
            return ImagesNotSupported(
                f"{self.model} at {self.base_url} ({message})", status_code=status
            )
        return translated

    def _message(self, text: str) -> str:
        return provider_text(text, self._redact)


def provider_text(text: str, redact: Callable[[str], str], limit: int = MAX_MESSAGE_CHARS) -> str:
    """Text from the provider fit for a message or a result: one printable line, secrets
    redacted, at most ``limit`` characters."""
    line = redact(printable(text).strip())
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return line


def read_completion(
    data: object,
    redact: Callable[[str], str],
    model: str,
    headers: dict[str, str] | None = None,
) -> LLMResponse:
    """The one reader of a chat completion's body (a live answer or a Batch API output item):
    the content with the key redacted, a printable bounded model name and finish reason, and the
    usage; ``InvalidResponse`` for anything that is not a completion. ``model``: the model asked
    for, when the body names none; ``headers``: the answer's (lower-case names), given here so
    that ``LLMResponse`` sees a simulated answer as it is made (and zeroes its cost)."""
    if not isinstance(data, dict):
        raise InvalidResponse("response body is not a JSON object")
    choices = data.get("choices")
    if not choices:
        problem = _provider_message(data) if "error" in data else None
        raise InvalidResponse(
            provider_text(f"the provider answered with an error: {problem}", redact)
            if problem
            else "response has no choices"
        )
    choice = choices[0] if isinstance(choices, list) else None
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise InvalidResponse("response has no message in its first choice")
    message, reason = choice["message"], choice.get("finish_reason")
    finish_reason = provider_text(reason, redact, 40) if isinstance(reason, str) else None
    content = _text_of(message.get("content"))
    if content is None or not content.strip():
        raise EmptyResponse(f"empty completion (finish_reason={finish_reason})")
    answered_by = data.get("model")
    named = (
        provider_text(answered_by, redact, MAX_MODEL_CHARS) if isinstance(answered_by, str) else ""
    )
    usage = data.get("usage")
    return LLMResponse(
        content=redact(content),
        usage=Usage.from_dict(usage if isinstance(usage, dict) else None),
        model=named or model,
        finish_reason=finish_reason,
        headers=headers or {},
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The SDK's default TLS context, made once: each reads the CA bundle (tens of ms a
    client)."""
    return httpx2.create_ssl_context()


def translate_error(
    error: BaseException,
    base_url: str,
    timeout: float,
    redact: Callable[[str], str],
    what: str = "",
) -> ProviderError:
    """The one translation of an openai SDK error into aita's error tree (``what``: the call
    that failed, for calls other than a completion)."""
    prefix = f"{what}: " if what else ""
    if isinstance(error, openai.APITimeoutError):
        return ProviderTimeout(
            f"{prefix}no response within {timeout:g}s from {base_url}",
            url=base_url,
            seconds=timeout,
        )
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return ProviderUnreachable(
            provider_text(f"{prefix}cannot reach {base_url}: {cause}", redact)
        )
    if isinstance(error, openai.APIStatusError):
        headers = {k.lower(): v for k, v in error.response.headers.items()}
        return status_error(
            error.status_code, error.body, error.message, headers, base_url, redact, what
        )
    if isinstance(error, BodyTooLarge):
        return ResponseTooLarge(str(error))
    return InvalidResponse(provider_text(f"{prefix}malformed response body: {error}", redact))


def status_error(
    status: int,
    body: object,
    message: str,
    headers: dict[str, str],
    base_url: str,
    redact: Callable[[str], str],
    what: str = "",
) -> ProviderError:
    """The error of an HTTP error answer (either path): ``body`` is its parsed error object,
    ``message`` the SDK's text for it (``Error code: <status>...``)."""
    prefix = f"{what}: " if what else ""
    text = provider_text(_provider_message(body) or message, redact)
    if status == 404 and not _has_version_path(base_url):
        text += f" (the base URL {base_url} has no /v1: try {base_url.rstrip('/')}/v1)"
        return EndpointNotFound(f"{prefix}{text}", status_code=status, headers={})
    return error_for_status(status, f"{prefix}{text}", headers)


def _error_body(status: int, body: bytes) -> tuple[object, str]:
    """An error answer read as the openai SDK reads it: (the JSON's ``error`` object, or the
    text; ``Error code: <status>``, with `` - <message>`` when the JSON has one)."""
    text = body.decode("utf-8", errors="replace").strip()
    message = f"Error code: {status}"
    try:
        data: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text, message
    error = data.get("error", data) if isinstance(data, dict) else None
    said = error.get("message") if isinstance(error, dict) else None
    if isinstance(said, str) and said:
        message += f" - {said}"
    return (data.get("error", data) if isinstance(data, dict) else data), message


def _version() -> str:
    try:
        return importlib.metadata.version("aita")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover (run from a checkout)
        return "0"


class Redactor:
    """Takes the API key and the base URL's credentials out of text that may be printed or saved.

    Any run of ``KEY_FRAGMENT`` or more characters of the key is redacted (the whole key when it
    is shorter), found in linear time: every such run contains one of the key's
    ``KEY_FRAGMENT - 3``-character pieces starting at a multiple of 4, so only those are searched
    for, and each hit is widened to the longest run of the key around it. Keys shorter than
    ``MIN_SECRET`` are placeholders and are left alone; so are URL passwords that short, though
    ``user:password@`` is always taken out.
    """

    _STEP = 4

    def __init__(self, key: str, url: str) -> None:
        self._key = key if len(key) >= MIN_SECRET else ""
        self._run = min(KEY_FRAGMENT, len(self._key))
        piece = max(1, self._run - self._STEP + 1)
        self._pieces = (
            [
                (start, self._key[start : start + piece])
                for start in range(0, len(self._key) - piece + 1, self._STEP)
            ]
            if self._key
            else []
        )
        self._literals: list[tuple[str, str]] = []
        try:
            parts = urlsplit(url)
            userinfo = parts.netloc.rpartition("@")[0]
            password = parts.password
        except ValueError:
            userinfo, password = "", None
        if userinfo:
            self._literals += [(url, redact_url(url, hide="")), (f"{userinfo}@", "")]
        for secret in {password or "", unquote(password or "")}:
            if len(secret) >= MIN_SECRET:
                self._literals.append((secret, REDACTED))

    def __call__(self, text: str) -> str:
        for secret, shown in self._literals:
            text = text.replace(secret, shown)
        spans = sorted(self._key_runs(text))
        if not spans:
            return text
        out: list[str] = []
        end = -1
        for start, stop in spans:
            if start > end:  # a new run; one that overlaps or touches the last only widens it
                out += [text[max(end, 0) : start], REDACTED]
            end = max(end, stop)
        out.append(text[end:])
        return "".join(out)

    def _key_runs(self, text: str) -> Iterator[tuple[int, int]]:
        """(start, stop) of every run of at least ``_run`` characters of the key in ``text``."""
        key = self._key
        for start, piece in self._pieces:
            at = text.find(piece)
            while at != -1:
                left, k = at, start
                while left > 0 and k > 0 and text[left - 1] == key[k - 1]:
                    left, k = left - 1, k - 1
                right, k = at + len(piece), start + len(piece)
                while right < len(text) and k < len(key) and text[right] == key[k]:
                    right, k = right + 1, k + 1
                if right - left >= self._run:
                    yield left, right
                at = text.find(piece, at + 1)


def _text_of(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a list of parts (as some servers send)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "".join(t for t in texts if isinstance(t, str))
    return None


def _capped_body(limit: int) -> Callable[[httpx2.Response], None]:
    """An httpx response hook (the SDK's calls: files and batches): a body announced larger
    than ``limit`` is refused before it is read, and any other is read through ``_CappedBody``."""

    def hook(response: httpx2.Response) -> None:
        cap = open_body(response.status_code, response.headers, limit)
        if not isinstance(response.stream, httpx2.SyncByteStream):  # pragma: no cover (async)
            return
        response.stream = _CappedBody(response.stream, cap)
        if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
            del response.headers["content-encoding"]  # decoded here, within the limit

    return hook


class _CappedBody(httpx2.SyncByteStream):
    """A response body read through a ``BodyCap``."""

    def __init__(self, stream: httpx2.SyncByteStream, cap: BodyCap) -> None:
        self._stream = stream
        self._cap = cap

    def __iter__(self) -> Iterator[bytes]:
        for raw in self._stream:
            yield self._cap.feed(raw)
        yield self._cap.finish()

    def close(self) -> None:
        self._stream.close()


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


def create_openrouter_client(
    api_key: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    timeout: float | None = None,
    default_headers: dict[str, str] | None = None,
    max_answer_bytes: int | None = None,
) -> OpenAICompatibleClient:
    """A client for OpenRouter, or any OpenAI-compatible server given its ``base_url``.

    Unset arguments come from the settings (``OPENROUTER_API_KEY``, ``AITA_MODEL``,
    ``AITA_BASE_URL``, ``AITA_REQUEST_TIMEOUT``, ``AITA_MAX_ANSWER_BYTES``). Local servers (vLLM,
    Ollama, llama.cpp) accept any key; pass ``api_key="local"``. A base URL that only a ``.env``
    file in the working directory set is named in a warning before any request: a cloned folder
    could otherwise send the key and the prompts to a host of its choosing.
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
    client = OpenAICompatibleClient(
        api_key=key,
        model=model or llm.model,
        base_url=base_url or llm.base_url,
        timeout=timeout if timeout is not None else llm.request_timeout,
        default_headers=default_headers,
        max_answer_bytes=max_answer_bytes or llm.max_answer_bytes,
    )
    if not base_url and llm.base_url_from is not None:
        log.warning(
            "AITA_BASE_URL comes from %s, not from your environment: requests and the API key "
            "go to %s instead of %s; remove it from that file unless you put it there",
            llm.base_url_from,
            client.base_url,
            urlsplit(DEFAULT_BASE_URL).hostname,
        )
    return client
