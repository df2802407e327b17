"""Structured output: how a ``response_model`` is asked for, and how its answer is read.

A pydantic model is sent as a *strict* JSON-schema response format, built by the openai SDK's own
helper the way OpenAI requires (every property required, ``additionalProperties: false``). Not
every server takes that: llama.cpp's answers ``json_schema`` with a 500, others with 400 or 422.
So each client negotiates once: ``json_schema`` first, then ``json_object`` carrying the schema,
then the schema written into the prompt, and keeps what worked for every later call. The answer
is validated by the model whichever way it was asked, and an answer wrapped in a markdown fence
(```json ... ```) is read too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import weakref
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

import orjson
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from aita.engine._client import LLMMessage, LLMResponse
from aita.errors import ProviderError

log = logging.getLogger("aita.client")

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL)
_NAMES_THE_FORMAT = re.compile(
    r"response.?format|json.?schema|json.?object|structured|guided|grammar|\bschema\b",
    re.IGNORECASE,
)


def json_schema_response_format(model: type[BaseModel]) -> dict[str, Any]:
    """The strict ``json_schema`` response format for a pydantic model."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": model.__name__,
            "schema": to_strict_json_schema(model),
            "strict": True,
        },
    }


def unfenced(text: str) -> str:
    """The JSON inside a markdown code fence, if the answer is wrapped in one."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    match = _FENCE.search(stripped)
    return match.group(1).strip() if match else stripped


def validate_json(model: type[M], text: str) -> M:
    """``model`` from a JSON answer, fenced or not. A number that is not finite (``NaN``,
    ``"Infinity"``: pydantic takes both for a float) is refused here, a retryable parse
    failure: written out it would become ``null``, which nothing can read back as a number."""
    value = model.model_validate_json(unfenced(text))
    where = _non_finite(value.model_dump(mode="python"))
    if where is not None:
        raise ValueError(f"{where or 'the answer'}: not a finite number")
    return value


def _non_finite(value: Any, where: str = "") -> str | None:
    """Where in ``value`` a float is NaN or infinite (a dotted path), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple | set | frozenset):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


class Mode(StrEnum):
    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    PROMPT = "prompt"


_NEXT = {Mode.JSON_SCHEMA: Mode.JSON_OBJECT, Mode.JSON_OBJECT: Mode.PROMPT}

Call = Callable[[list[LLMMessage], dict[str, Any]], LLMResponse]
AsyncCall = Callable[[list[LLMMessage], dict[str, Any]], Awaitable[LLMResponse]]


class FormatNegotiation:
    """How one server takes structured-output requests, learned on the first and kept.

    Until it is known, structured calls go one at a time (the first probes, the others wait for
    what it learns), so a server that refuses ``json_schema`` is refused once per client, not
    once per worker.
    """

    def __init__(self, server: str) -> None:
        self.server = server
        #: the way this server is asked, once a call asked that way was answered (or refused
        #: for a reason that is not the format)
        self.mode: Mode | None = None
        #: calls the server refused for their response format (at most two in a client's life)
        self.refusals = 0
        self._trying = Mode.JSON_SCHEMA
        self._probe = threading.Lock()
        # the same for calls on event loops: one lock per loop, made on its first probe
        self._async_probes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def complete(
        self, call: Call, messages: list[LLMMessage], params: dict[str, Any]
    ) -> LLMResponse:
        schema = _schema_of(params)
        if schema is None:
            return call(messages, params)
        if self.mode is not None:
            return call(*_as_mode(self.mode, schema, messages, params))
        with self._probe:
            while self.mode is None:
                mode = self._trying
                try:
                    response = call(*_as_mode(mode, schema, messages, params))
                except ProviderError as error:
                    if mode in _NEXT and _refuses_format(error):
                        self._refused(mode, error)
                        continue
                    raise  # not about the format: the next structured call tries this mode
                self.mode = mode
                return response
        return call(*_as_mode(self.mode, schema, messages, params))

    async def acomplete(
        self, call: AsyncCall, messages: list[LLMMessage], params: dict[str, Any]
    ) -> LLMResponse:
        """``complete`` for a coroutine ``call``: the same negotiation, the probe's waiters
        waiting on the event loop."""
        schema = _schema_of(params)
        if schema is None:
            return await call(messages, params)
        if self.mode is not None:
            return await call(*_as_mode(self.mode, schema, messages, params))
        loop = asyncio.get_running_loop()
        with self._probe:
            probe = self._async_probes.get(loop)
            if probe is None:
                probe = self._async_probes[loop] = asyncio.Lock()
        async with probe:
            while self.mode is None:
                mode = self._trying
                try:
                    response = await call(*_as_mode(mode, schema, messages, params))
                except ProviderError as error:
                    if mode in _NEXT and _refuses_format(error):
                        self._refused(mode, error)
                        continue
                    raise
                self.mode = mode
                return response
        return await call(*_as_mode(self.mode, schema, messages, params))

    def _refused(self, mode: Mode, error: ProviderError) -> None:
        self._trying = _NEXT[mode]
        self.refusals += 1
        log.warning(
            "%s refused structured output as %s (%s); asking with %s from now on",
            self.server,
            mode,
            error,
            self._trying,
        )


def _schema_of(params: dict[str, Any]) -> dict[str, Any] | None:
    fmt = params.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else None


def _refuses_format(error: ProviderError) -> bool:
    """A refusal of the response format itself, never an outage: a 400, 422 or 5xx whose
    message names the format (llama.cpp answers ``json_schema`` with a 500 saying so)."""
    status = error.status_code or 0
    refusal = status in (400, 422) or status >= 500
    return refusal and bool(_NAMES_THE_FORMAT.search(error.message))


def _as_mode(
    mode: Mode, schema: dict[str, Any], messages: list[LLMMessage], params: dict[str, Any]
) -> tuple[list[LLMMessage], dict[str, Any]]:
    if mode is Mode.JSON_SCHEMA:
        return messages, params
    params = {k: v for k, v in params.items() if k != "response_format"}
    if mode is Mode.JSON_OBJECT:
        params["response_format"] = {"type": "json_object", "schema": schema}
    instruction = (
        "Answer with JSON only: one object that matches this JSON schema.\n"
        + orjson.dumps(schema).decode()
    )
    return _with_system_note(messages, instruction), params


def _with_system_note(messages: list[LLMMessage], note: str) -> list[LLMMessage]:
    """The note appended to the system message (chat templates often allow only one, first)."""
    if messages and messages[0].role == "system" and isinstance(messages[0].content, str):
        first = LLMMessage("system", f"{messages[0].content}\n\n{note}")
        return [first, *messages[1:]]
    return [LLMMessage("system", note), *messages]
