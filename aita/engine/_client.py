"""What a model client takes and returns.

A client is any object with ``complete(messages, **params) -> LLMResponse``. The executor needs
nothing else, so users can bring their own (a local model, a cache, a test double).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# Content is plain text or OpenAI-style parts: {"type": "text", ...} / {"type": "image_url", ...}.
MessageContent = str | list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LLMMessage:
    """One chat message; ``content`` is text or OpenAI-style parts (text and image_url)."""

    role: str
    content: MessageContent

    def to_openai(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call; ``cost`` in USD when the provider reports it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost": self.cost,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        if not data:
            return cls()
        cost = data.get("cost")
        return cls(
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
            total_tokens=int(data.get("total_tokens") or 0),
            cost=float(cost) if cost is not None else None,
        )


#: The header the provider simulator puts on every answer: it is never taken for a real model's.
SIMULATED_HEADER = "x-aita-simulated"


@dataclass(slots=True)
class LLMResponse:
    """One completion: its text, usage, the model that answered and why it stopped."""

    content: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        """Answered by aita's provider simulator (it says so in a header of every answer)."""
        return self.headers.get(SIMULATED_HEADER) == "true"


@runtime_checkable
class LLMClient(Protocol):
    """Anything that can answer a chat completion."""

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        """One chat completion. Raises a ``ProviderError`` subclass on failure."""
        ...
