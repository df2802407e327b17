"""What a model client takes and returns.

A client is any object with ``complete(messages, **params) -> LLMResponse``. The executor needs
nothing else, so users can bring their own (a local model, a cache, a test double).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from aita.errors import InvalidResponse

# Content is plain text or OpenAI-style parts: {"type": "text", ...} / {"type": "image_url", ...}.
MessageContent = str | list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LLMMessage:
    """One chat message; ``content`` is text or OpenAI-style parts (text and image_url)."""

    role: str
    content: MessageContent

    def to_openai(self) -> dict[str, Any]:
        """The message as the OpenAI chat API takes it."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call; ``cost`` in USD when the provider reports it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The usage as a plain mapping (``from_dict`` reads it back)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost": self.cost,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Usage:
        """Usage from a provider's or a custom client's mapping. Counts that are not whole
        non-negative numbers count as 0; a cost that is not a non-negative number is unknown."""
        if not data:
            return cls()
        prompt = _count(data.get("prompt_tokens"))
        completion = _count(data.get("completion_tokens"))
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=_count(data.get("total_tokens")) or prompt + completion,
            cost=_price(data.get("cost")),
        )


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0
    return max(0, int(value)) if value < 2**53 else 0


def _price(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    cost = float(value)
    return cost if 0 <= cost < 1e6 else None  # NaN, negative or absurd: not a price


#: The header the provider simulator puts on every answer: it is never taken for a real model's.
SIMULATED_HEADER = "x-aita-simulated"


@dataclass(slots=True)
class LLMResponse:
    """One completion: its text, usage, the model that answered and why it stopped.

    Custom clients may give ``usage`` as a mapping (``{"prompt_tokens": ...}``) or None, and
    ``model`` as None: they are normalised here. A simulated answer costs nothing, whatever
    cost its usage reports or a price table would give its model's name.
    """

    content: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        usage: Any = self.usage
        if not isinstance(usage, Usage):
            self.usage = Usage.from_dict(usage if isinstance(usage, Mapping) else None)
        if self.model is None:
            self.model = ""
        if self.headers is None:
            self.headers = {}
        if self.simulated and self.usage.cost != 0.0:
            self.usage = replace(self.usage, cost=0.0)

    @property
    def simulated(self) -> bool:
        """Answered by aita's provider simulator (it says so in a header of every answer)."""
        return self.headers.get(SIMULATED_HEADER) == "true"

    @property
    def truncated(self) -> bool:
        """The answer was cut off at the token limit (``finish_reason`` ``length``)."""
        return self.finish_reason == "length"


@runtime_checkable
class LLMClient(Protocol):
    """Anything that can answer a chat completion."""

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        """One chat completion. Raises a ``ProviderError`` subclass on failure."""
        ...


def checked_response(answer: object) -> LLMResponse:
    """What a client returned, if it is an ``LLMResponse``; a custom client that returns
    anything else has failed that attempt (``InvalidResponse``), not the run."""
    if not isinstance(answer, LLMResponse):
        raise InvalidResponse(f"the client returned {type(answer).__name__}, not an LLMResponse")
    return answer
