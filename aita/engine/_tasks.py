"""Tasks: what one LLM call is for, how to ask it and how to read its answer.

The executor treats every task alike: ``build_messages`` -> call -> ``parse_response``. A parse
failure is retryable (a new sample may parse); ``should_retry`` lets a task narrow or widen that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from aita.engine._client import LLMMessage
from aita.engine._images import IMAGE_TOKENS, image_to_data_url
from aita.engine._retry import is_retryable
from aita.engine._structured import json_schema_response_format, validate_json
from aita.errors import ResponseParseError


class LLMTask(ABC):
    """One unit of LLM work.

    Optional hooks: ``dependencies`` (ids of tasks whose results this one needs; the executor puts
    them in ``dependency_results`` before ``build_messages``), ``response_model`` (a pydantic
    model sent as a JSON-schema response format and validated on the way back) and
    ``fallback(error)`` (a result to use when every retry failed, reported as a fallback).
    """

    dependencies: Sequence[str] = ()
    response_model: ClassVar[type[BaseModel] | None] = None
    #: Part of the request key: bump it when the task's meaning changes while its messages and
    #: parameters stay the same, so answers recorded for the old meaning are not reused.
    version: str | int | None = None
    dependency_results: Mapping[str, Any] = {}
    #: A typical answer's length, for cost estimates before any call is made.
    expected_output_tokens: ClassVar[int] = 500
    #: An answer cut off at the token limit is always counted and logged; with this on it is
    #: also an error (``TruncatedResponse``), not a result.
    truncation_is_error: ClassVar[bool] = False

    @property
    @abstractmethod
    def task_id(self) -> str:
        """Unique within a batch; names the task in results and checkpoints."""

    @abstractmethod
    def build_messages(self) -> list[LLMMessage]:
        """The messages to send (``dependency_results`` are filled in by then)."""

    def parse_response(self, response_text: str) -> Any:
        """The task's result from the model's text; raising makes the attempt a retryable
        parse failure. By default the text itself, or the ``response_model`` it validates."""
        if self.response_model is not None:
            return validate_json(self.response_model, response_text)
        return response_text

    def get_llm_params(self) -> dict[str, Any]:
        """Request parameters (``temperature``, ``max_tokens``, ``model``, ...)."""
        return {}

    def should_retry(self, error: Exception, retry_count: int) -> bool:
        """Whether this error is worth another attempt; the executor caps the count."""
        return is_retryable(error)

    def revise_messages(self, messages: list[LLMMessage], error: Exception) -> list[LLMMessage]:
        """The messages for the next attempt after ``error``; by default the same ones.

        Override to tell the model what was wrong (see ``with_correction``).
        """
        return messages

    def fallback(self, error: Exception) -> Any:
        """A result to use when every attempt failed; override to provide one."""
        raise NotImplementedError

    @property
    def has_fallback(self) -> bool:
        """Whether the task overrides ``fallback``."""
        return type(self).fallback is not LLMTask.fallback

    def request_params(self) -> dict[str, Any]:
        """``get_llm_params`` plus the response format implied by ``response_model``."""
        params = dict(self.get_llm_params())
        if self.response_model is not None and "response_format" not in params:
            params["response_format"] = json_schema_response_format(self.response_model)
        return params

    def estimated_prompt_tokens(self) -> int:
        """About how many tokens the prompt takes, for cost estimates before any call."""
        return estimate_prompt_tokens(self.build_messages())


class SimpleLLMTask(LLMTask):
    """A prompt in, text (or ``parse_fn(text)``) out.

    With ``dependencies``, the results of those tasks are appended to the prompt, each under
    its task id.
    """

    def __init__(
        self,
        task_id: str,
        prompt: str,
        system_prompt: str | None = None,
        parse_fn: Callable[[str], Any] | None = None,
        dependencies: Sequence[str] = (),
        **llm_params: Any,
    ) -> None:
        self._task_id = task_id
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.parse_fn = parse_fn
        self.dependencies = tuple(dependencies)
        self.llm_params = llm_params

    @property
    def task_id(self) -> str:
        return self._task_id

    def build_messages(self) -> list[LLMMessage]:
        messages = []
        if self.system_prompt:
            messages.append(LLMMessage(role="system", content=self.system_prompt))
        prompt = self.prompt
        if self.dependency_results:
            earlier = "\n\n".join(f"[{k}]\n{v}" for k, v in self.dependency_results.items())
            prompt = f"{prompt}\n\nResults of the tasks this one depends on:\n{earlier}"
        messages.append(LLMMessage(role="user", content=prompt))
        return messages

    def parse_response(self, response_text: str) -> Any:
        if self.parse_fn is not None:
            return self.parse_fn(response_text)
        return super().parse_response(response_text)

    def get_llm_params(self) -> dict[str, Any]:
        return dict(self.llm_params)


class VisionLLMTask(LLMTask):
    """Images plus a prompt. Local image paths are sent inline as base64 data URLs."""

    image_detail: str | None = None

    @abstractmethod
    def get_image_urls(self) -> list[str]:
        """http(s) URLs, ``data:`` URLs or local file paths."""

    @abstractmethod
    def get_prompt_text(self) -> str:
        """The text that goes with the images."""

    def get_system_prompt(self) -> str | None:
        """A system message to send first, if any."""
        return None

    def estimated_prompt_tokens(self) -> int:
        """Without reading the images: they are only counted (one, if they cannot be listed:
        the task will fail on its own, not the estimate)."""
        text = self.get_prompt_text() + (self.get_system_prompt() or "")
        try:
            images = len(self.get_image_urls())
        except Exception:
            images = 1
        return len(text) // 4 + IMAGE_TOKENS * images

    def build_messages(self) -> list[LLMMessage]:
        parts: list[dict[str, Any]] = [{"type": "text", "text": self.get_prompt_text()}]
        for url in self.get_image_urls():
            image: dict[str, Any] = {"url": image_to_data_url(url)}
            if self.image_detail:
                image["detail"] = self.image_detail
            parts.append({"type": "image_url", "image_url": image})
        messages = []
        system = self.get_system_prompt()
        if system:
            messages.append(LLMMessage(role="system", content=system))
        messages.append(LLMMessage(role="user", content=parts))
        return messages


class BatchableLLMTask(LLMTask):
    """A task that can share one call with compatible tasks.

    ``combine_with(others)`` returns a task whose answer covers ``[self, *others]``;
    ``split_batch_result(result)`` maps that answer back to ``{task_id: result}``.
    A task missing from the split is retried on its own.
    """

    max_batch_size: int = 10

    @abstractmethod
    def can_batch_with(self, other: BatchableLLMTask) -> bool:
        """Whether ``other`` may share a call with this task."""

    @abstractmethod
    def combine_with(self, others: list[BatchableLLMTask]) -> BatchableLLMTask:
        """One task whose answer covers this task and ``others``."""

    @abstractmethod
    def split_batch_result(self, batch_result: Any) -> dict[str, Any]:
        """The combined result as ``{task_id: result}`` of the tasks it covers."""


def estimate_prompt_tokens(messages: list[LLMMessage]) -> int:
    """A rough prompt size for budgets and estimates: 4 characters a token, 1,000 an image."""
    total = 0
    for message in messages:
        if isinstance(message.content, str):
            total += len(message.content) // 4
            continue
        for part in message.content:
            is_image = part.get("type") == "image_url"
            total += IMAGE_TOKENS if is_image else len(str(part.get("text", ""))) // 4
    return total


def with_correction(messages: list[LLMMessage], error: Exception) -> list[LLMMessage]:
    """``messages`` plus the rejected answer and why it was rejected, for output that failed
    validation; unchanged for any other error."""
    if not isinstance(error, ResponseParseError) or error.raw_response is None:
        return messages
    return [
        *messages,
        LLMMessage(role="assistant", content=error.raw_response),
        LLMMessage(
            role="user",
            content=f"That answer was rejected: {error}. Answer again, fixing exactly this.",
        ),
    ]
