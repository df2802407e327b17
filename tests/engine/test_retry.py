"""The retry policy as tables: status -> error type -> decision; headers -> delay."""

from __future__ import annotations

import pytest

from aita.engine import (
    ExponentialBackoff,
    LLMMessage,
    LLMTask,
    RetryPolicy,
    error_for_status,
    is_outage,
    is_retryable,
    retry_after,
)
from aita.errors import (
    AuthenticationFailed,
    BadRequest,
    EmptyResponse,
    InvalidResponse,
    ModelNotFound,
    ProviderTimeout,
    ProviderUnavailable,
    ProviderUnreachable,
    QuotaSpent,
    RateLimited,
    ResponseParseError,
)


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
    policy = RetryPolicy(backoff=ExponentialBackoff(initial=1.0, jitter=0.0))
    assert policy.delay(RateLimited("slow down", status_code=429, retry_after=1.5), 3) == 1.5
    assert policy.delay(RateLimited("x", retry_after=10_000), 0) == policy.max_retry_after
    assert policy.delay(ProviderUnavailable("x"), 3) == 8.0


def test_backoff_grows_caps_and_jitters_downward() -> None:
    plain = ExponentialBackoff(initial=0.5, multiplier=2, maximum=4.0, jitter=0.0)
    assert [plain(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    low = ExponentialBackoff(initial=1.0, jitter=0.25, rng=lambda: 1.0)
    assert low(0) == 0.75


def test_policy_respects_the_cap() -> None:
    policy = RetryPolicy(max_retries=3)
    error = ProviderUnavailable("x")
    assert policy.decide(error, 2).retry
    assert not policy.decide(error, 3).retry
    assert not policy.decide(BadRequest("x"), 0).retry


@pytest.mark.parametrize(
    ("error", "pause_all", "stop_batch"),
    [
        (RateLimited("slow down", status_code=429, retry_after=0.5), True, False),
        (ProviderUnavailable("down", status_code=503), False, False),
        (AuthenticationFailed("bad key", status_code=401), False, True),
        (BadRequest("no", status_code=400), False, False),
    ],
)
def test_policy_says_who_waits_and_when_to_stop(
    error: Exception, pause_all: bool, stop_batch: bool
) -> None:
    decision = RetryPolicy().decide(error, 0)
    assert (decision.pause_all, decision.stop_batch) == (pause_all, stop_batch)


# -- what the mutants of the retry policy showed untested (scripts/mutation.py) -------------------


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ProviderUnreachable("connection refused"), True),
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (ProviderUnavailable("bad gateway", status_code=502), True),
        (ProviderUnavailable("unavailable", status_code=503), True),
        (ProviderUnavailable("gateway timeout", status_code=504), True),
        (ProviderUnavailable("internal error", status_code=500), False),
        (ProviderUnavailable("no status"), False),
        (ProviderTimeout("slow"), False),
        (TimeoutError(), False),
        (RateLimited("slow down", status_code=503), False),
        (BadRequest("no", status_code=400), False),
    ],
)
def test_only_an_unreachable_or_gateway_failing_provider_is_an_outage(
    error: Exception, outage: bool
) -> None:
    assert is_outage(error) is outage


def test_an_outage_keeps_retrying_past_the_cap_and_says_so() -> None:
    policy = RetryPolicy(max_retries=1)
    down = policy.decide(ProviderUnreachable("connection refused"), 5)
    assert (down.retry, down.outage) == (True, True)
    broken = policy.decide(ProviderUnavailable("internal error", status_code=500), 5)
    assert (broken.retry, broken.outage) == (False, False)


class Picky(LLMTask):
    """Retries a ValueError twice, and nothing else; remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[Exception, int]] = []

    @property
    def task_id(self) -> str:
        return "picky"

    def build_messages(self) -> list[LLMMessage]:
        return [LLMMessage(role="user", content="hi")]

    def should_retry(self, error: Exception, retry_count: int) -> bool:
        self.asked.append((error, retry_count))
        return isinstance(error, ValueError) and retry_count < 2


def test_the_tasks_should_retry_has_the_last_word() -> None:
    policy = RetryPolicy(max_retries=5)
    task = Picky()
    bug = ValueError("the task's own")
    assert policy.decide(bug, 1, task).retry  # not retryable by type, but the task says so
    assert not policy.decide(bug, 2, task).retry
    unreachable = ProviderUnreachable("connection refused")
    no = policy.decide(unreachable, 0, task)  # retryable, an outage even, but the task says no
    assert (no.retry, no.outage) == (False, False)
    assert task.asked == [(bug, 1), (bug, 2), (unreachable, 0)]


def test_the_decision_waits_the_servers_time_else_the_backoff() -> None:
    policy = RetryPolicy(backoff=ExponentialBackoff(initial=1.0, jitter=0.0))
    assert policy.decide(RateLimited("slow down", retry_after=2.5), 0).delay == 2.5
    assert policy.decide(ProviderUnavailable("down"), 2).delay == 4.0


@pytest.mark.parametrize(("asked", "waited"), [(0.25, 0.25), (0.0, 0.0), (-3.0, 0.0)])
def test_a_short_or_negative_server_wait_is_taken_as_it_is_or_as_none(
    asked: float, waited: float
) -> None:
    error = RateLimited("slow down", retry_after=asked)
    assert RetryPolicy().delay(error, 4) == waited


def test_jitter_takes_off_up_to_its_share_of_the_wait() -> None:
    half = ExponentialBackoff(initial=2.0, jitter=0.25, rng=lambda: 0.5)
    assert half(0) == 2.0 * (1 - 0.25 * 0.5)
    assert ExponentialBackoff(initial=2.0, jitter=0.25, rng=lambda: 0.0)(0) == 2.0


@pytest.mark.parametrize(
    ("wait", "shown"),
    [(301, "301s (5 min)"), (99999, "99999s (27.8 h)"), (3600, "3600s (1.0 h)")],
)
def test_a_wait_past_the_outage_budget_is_a_spent_quota_that_stops_the_batch(
    wait: float, shown: str
) -> None:
    refusal = RateLimited("quota", status_code=429, retry_after=wait, headers={"retry-after": "x"})
    decision = RetryPolicy(longest_wait=300.0).decide(refusal, 0)
    assert (decision.retry, decision.stop_batch, decision.pause_all) == (False, True, False)
    assert decision.delay == 0.0 and not decision.outage
    failure = decision.failure
    assert isinstance(failure, QuotaSpent) and isinstance(failure, RateLimited)
    assert (failure.status_code, failure.retry_after, failure.headers) == (
        429,
        wait,
        {"retry-after": "x"},
    )
    assert str(failure) == (
        f"quota spent (HTTP 429): the provider asks to wait {shown} (retry-after), longer than "
        "the outage budget (AITA_OUTAGE_BUDGET=300s); run the same command again after that "
        "wait to continue"
    )
    assert decision.stop_reason == f"cancelled: {failure}"


LIMITED = "slow down"


@pytest.mark.parametrize(
    ("policy", "error", "delay"),
    [
        (RetryPolicy(longest_wait=300.0), RateLimited(LIMITED, retry_after=300), 120.0),
        (RetryPolicy(longest_wait=300.0), RateLimited(LIMITED, retry_after=30), 30.0),
        (RetryPolicy(), RateLimited(LIMITED, retry_after=99999), 120.0),
    ],
)
def test_a_wait_within_the_budget_or_without_one_is_waited(
    policy: RetryPolicy, error: RateLimited, delay: float
) -> None:
    decision = policy.decide(error, 0)
    assert (decision.retry, decision.pause_all, decision.stop_batch) == (True, True, False)
    assert decision.delay == delay and decision.failure is None


@pytest.mark.parametrize(
    "error", [BadRequest("no", status_code=400, retry_after=99999), ValueError("a bug")]
)
def test_an_error_not_worth_retrying_is_no_spent_quota(error: Exception) -> None:
    decision = RetryPolicy(longest_wait=1.0).decide(error, 0)
    assert (decision.retry, decision.stop_batch, decision.failure) == (False, False, None)


def test_a_refused_key_stops_the_batch_saying_so() -> None:
    refused = AuthenticationFailed("bad key", status_code=401)
    decision = RetryPolicy(longest_wait=300.0).decide(refused, 0)
    assert decision.stop_batch and not decision.retry and decision.failure is None
    assert decision.stop_reason == f"cancelled: the provider refused the API key ({refused})"


def test_a_short_spent_wait_is_shown_in_seconds() -> None:
    decision = RetryPolicy(longest_wait=10.0).decide(
        RateLimited("q", status_code=429, retry_after=90.5), 0
    )
    assert decision.failure is not None and "wait 90.5s (retry-after)" in str(decision.failure)
    assert "AITA_OUTAGE_BUDGET=10s)" in str(decision.failure)


@pytest.mark.parametrize(
    ("wait", "shown"), [(119, "119s"), (120, "120s (2 min)"), (3000, "3000s (50 min)")]
)
def test_a_spent_wait_is_shown_as_the_provider_gave_it_and_what_that_means(
    wait: float, shown: str
) -> None:
    decision = RetryPolicy(longest_wait=10.0).decide(RateLimited("q", retry_after=wait), 0)
    assert f"wait {shown} (retry-after)" in str(decision.failure)
