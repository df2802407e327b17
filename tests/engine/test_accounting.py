"""What a batch counts: every attempt's tokens and cost, nothing twice, nothing paid unseen."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from aita.engine import LLMMessage, LLMResponse, SimpleLLMTask, Usage
from tests.support.doubles import executor_for


class FirstAnswerUnreadable:
    """Each call costs 10 prompt + 5 completion tokens and $0.001; each task's first answer is
    not JSON, the second is."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        prompt = str(messages[0].content)
        with self.lock:
            self.calls[prompt] = self.calls.get(prompt, 0) + 1
            first = self.calls[prompt] == 1
        content = "not json" if first else '{"ok": true}'
        return LLMResponse(content=content, usage=Usage(10, 5, 15, cost=0.001), model="m")


def json_tasks(n: int) -> list[SimpleLLMTask]:
    import json

    return [SimpleLLMTask(f"t{i}", f"prompt {i}", parse_fn=json.loads) for i in range(n)]


def test_tokens_and_cost_cover_every_attempt_of_a_task() -> None:
    result = executor_for(FirstAnswerUnreadable()).execute_batch(json_tasks(4))
    for r in result.task_results:
        assert r.success and r.retry_count == 1
        assert (r.prompt_tokens, r.completion_tokens, r.tokens) == (20, 10, 30)
        assert r.cost == pytest.approx(0.002)
    m = result.metrics
    assert (m.prompt_tokens, m.completion_tokens, m.requests) == (80, 40, 8)
    assert m.total_cost == pytest.approx(0.008)


def test_a_task_that_never_succeeds_still_counts_what_it_cost() -> None:
    client = FirstAnswerUnreadable()
    result = executor_for(client, max_retries=0).execute_batch(json_tasks(3))
    assert not result.successful_results
    assert result.metrics.total_tokens == 3 * 15
    assert result.metrics.total_cost == pytest.approx(0.003)


def test_tasks_answered_from_the_checkpoint_cost_nothing_again() -> None:
    client = FirstAnswerUnreadable()
    first = executor_for(client).execute_batch(json_tasks(5), checkpoint_name="paid")
    assert first.metrics.total_cost == pytest.approx(0.010)
    again = executor_for(client).execute_batch(json_tasks(6), checkpoint_name="paid")
    assert again.metrics.resumed_tasks == 5
    assert again.metrics.requests == 2  # only the new task, twice
    assert again.metrics.total_tokens == 30 and again.metrics.total_cost == pytest.approx(0.002)
    resumed = [r for r in again.task_results if r.from_checkpoint]
    assert len(resumed) == 5 and all(r.tokens == 30 for r in resumed)  # what they cost then
