"""Retry rules as tables: status -> error type -> decision; headers -> delay."""

from __future__ import annotations

import pytest

from aita.errors import (
    AuthenticationFailed,
    BadRequest,
    EmptyResponse,
    InvalidResponse,
    ModelNotFound,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    ResponseParseError,
    is_retryable,
)
from aita.services.llm.openrouter import error_for_status, retry_after
from aita.utils.retry import MAX_RETRY_AFTER, ExponentialBackoff, retry_delay, should_retry


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (400, BadRequest, False),
        (401, AuthenticationFailed, False),
        (403, AuthenticationFailed, False),
        (404, ModelNotFound, False),
        (408, ProviderUnavailable, True),
        (409, ProviderUnavailable, True),
        (413, BadRequest, False),
        (422, BadRequest, False),
        (429, RateLimited, True),
        (500, ProviderUnavailable, True),
        (502, ProviderUnavailable, True),
        (503, ProviderUnavailable, True),
    ],
)
def test_status_decides_type_and_retry(status: int, error_type: type, retryable: bool) -> None:
    error = error_for_status(status, "provider says no", {})
    assert type(error) is error_type
    assert is_retryable(error) is retryable
    assert "provider says no" in str(error)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ProviderTimeout("slow"), True),
        (EmptyResponse("empty"), True),
        (InvalidResponse("garbled"), True),
        (ResponseParseError("bad json"), True),
        (ValueError("a bug"), False),
        (KeyError("a bug"), False),
    ],
)
def test_other_errors_are_classified_by_type(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "3"}, 3.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:05 GMT"}, 5.0),
        ({"retry-after": "not a date"}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # 07:28:00 GMT on that date
    assert retry_after(headers, now=now) == expected


def test_server_wait_wins_over_backoff_and_is_capped() -> None:
    backoff = ExponentialBackoff(initial=1.0, jitter=0.0)
    assert (
        retry_delay(RateLimited("slow down", status_code=429, retry_after=1.5), 3, backoff) == 1.5
    )
    assert retry_delay(RateLimited("x", retry_after=10_000), 0, backoff) == MAX_RETRY_AFTER
    assert retry_delay(ProviderUnavailable("x"), 3, backoff) == 8.0


def test_backoff_grows_caps_and_jitters_downward() -> None:
    plain = ExponentialBackoff(initial=0.5, multiplier=2, maximum=4.0, jitter=0.0)
    assert [plain(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    low = ExponentialBackoff(initial=1.0, jitter=0.25, rng=lambda: 1.0)
    assert low(0) == 0.75


def test_should_retry_respects_the_cap() -> None:
    error = ProviderUnavailable("x")
    assert should_retry(error, 2, max_retries=3)
    assert not should_retry(error, 3, max_retries=3)
    assert not should_retry(BadRequest("x"), 0, max_retries=3)
