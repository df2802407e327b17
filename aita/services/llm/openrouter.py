"""Re-exports the OpenAI-compatible client from ``aita.engine``, for code written against the
guide."""

from aita.engine import OpenAICompatibleClient, create_openrouter_client

__all__ = ["OpenAICompatibleClient", "create_openrouter_client"]
