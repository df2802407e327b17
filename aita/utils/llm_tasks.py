"""Re-exports the task classes from ``aita.engine``, for code written against the guide."""

from aita.engine import (
    BatchableLLMTask,
    LLMTask,
    SimpleLLMTask,
    VisionLLMTask,
    image_to_data_url,
    json_schema_response_format,
    with_correction,
)

__all__ = [
    "BatchableLLMTask",
    "LLMTask",
    "SimpleLLMTask",
    "VisionLLMTask",
    "image_to_data_url",
    "json_schema_response_format",
    "with_correction",
]
