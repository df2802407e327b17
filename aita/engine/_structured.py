"""Structured output: how a ``response_model`` is asked for.

A pydantic model is sent as an OpenAI ``json_schema`` response format; the answer is validated
by the model on the way back (``LLMTask.parse_response``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def json_schema_response_format(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": model.__name__,
            "schema": model.model_json_schema(),
            "strict": True,
        },
    }
