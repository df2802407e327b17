"""Re-exports the rate limiter from ``aita.engine``, for code written against the guide."""

from aita.engine import NoOpRateLimiter, RateLimiter

__all__ = ["NoOpRateLimiter", "RateLimiter"]
