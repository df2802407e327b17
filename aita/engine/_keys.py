"""Request keys: what a call asked, as a digest, so an answer is reused only for the same question.

A key covers the model the call goes to, the messages, the request parameters (the response
format included) and the task's ``version``; not the parser, since answers are stored raw and
parsed again. Two requests with equal keys would be answered alike by the provider: the
checkpoint journal and the response cache may hand one's answer to the other, and to nothing
else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from aita.engine._client import LLMClient, LLMMessage

#: Bumped if the key's recipe changes, so keys made by an older aita never match by accident.
KEY_VERSION = 1


def client_model(client: LLMClient) -> str:
    """The model a client's calls go to by default: its ``model``, else its class name."""
    model = getattr(client, "model", None)
    return model if isinstance(model, str) and model else type(client).__name__


def client_server(client: LLMClient) -> str:
    """The server a client's calls go to: its ``base_url`` (credentials already left out, no
    trailing ``/``), else its class name. Part of the response cache's key."""
    url = getattr(client, "base_url", None)
    return url.rstrip("/") if isinstance(url, str) and url else type(client).__name__


def request_key(
    model: str,
    messages: Sequence[LLMMessage],
    params: Mapping[str, Any],
    version: str | int | None = None,
) -> str:
    """A hex digest of what one call asks; ``params["model"]``, when set, wins over ``model``."""
    request = {
        "key_version": KEY_VERSION,
        "model": params.get("model") or model,
        "messages": [message.to_openai() for message in messages],
        "params": (
            params
            if type(params) is dict and "model" not in params
            else {k: v for k, v in params.items() if k != "model"}
        ),
        "version": version,
    }
    content = orjson.dumps(request, option=orjson.OPT_SORT_KEYS, default=_unknown)
    return hashlib.sha256(content).hexdigest()


def _unknown(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
    return repr(value)
