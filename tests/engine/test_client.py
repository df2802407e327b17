"""The OpenAI-compatible client over real HTTP to the simulator: answers and error types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aita.engine import (
    LLMMessage,
    create_openrouter_client,
    image_to_data_url,
    json_schema_response_format,
)
from aita.errors import (
    AuthenticationFailed,
    ConfigError,
    EmptyResponse,
    InvalidResponse,
    ModelNotFound,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from tests.support.doubles import PNG_1PX, TEST_KEY, SimulatorFactory, client_for

HELLO = [LLMMessage(role="user", content="hello")]


def test_answer_usage_and_cost(simulator: SimulatorFactory) -> None:
    sim = simulator(announce=False)  # a provider that reports its cost
    response = client_for(sim).complete(HELLO, temperature=0.1)
    assert response.content == "[sim] hello"
    assert (
        response.usage.total_tokens
        == response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert response.usage.cost is not None and response.usage.cost > 0
    assert response.finish_reason == "stop"


def test_a_simulated_answer_costs_nothing_whatever_its_usage_says(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator()  # as aita simulate: it reports a cost, and says it is simulated
    response = client_for(sim, model="openai/gpt-4o-mini").complete(HELLO)
    assert response.simulated and response.usage.cost == 0.0


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        ({"error_rate": 1.0}, ProviderUnavailable),
        ({"empty_rate": 1.0}, EmptyResponse),
        ({"malformed_rate": 1.0}, InvalidResponse),
    ],
)
def test_faults_become_retryable_errors(
    simulator: SimulatorFactory, fault: dict[str, float], error_type: type
) -> None:
    sim = simulator(**fault)
    with pytest.raises(error_type):
        client_for(sim).complete(HELLO)


def test_hang_past_the_timeout_is_a_timeout(simulator: SimulatorFactory) -> None:
    sim = simulator(hang_rate=1.0, hang_seconds=5)
    with pytest.raises(ProviderTimeout):
        client_for(sim, timeout=0.3).complete(HELLO)


def test_429_carries_the_servers_wait(simulator: SimulatorFactory) -> None:
    sim = simulator(rate_limit=2, burst=1)
    client = client_for(sim)
    client.complete(HELLO)
    with pytest.raises(RateLimited) as caught:
        client.complete(HELLO)
    assert caught.value.status_code == 429
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 0.5


def test_wrong_key_fails_with_the_key_redacted(simulator: SimulatorFactory) -> None:
    sim = simulator(api_key="sk-the-right-one")
    with pytest.raises(AuthenticationFailed) as caught:
        client_for(sim).complete(HELLO)
    assert TEST_KEY not in str(caught.value)
    assert "Incorrect API key" in str(caught.value)


def test_unknown_model_fails_with_the_providers_message(simulator: SimulatorFactory) -> None:
    sim = simulator(models=frozenset({"known/model"}))
    with pytest.raises(ModelNotFound, match="does-not-exist"):
        client_for(sim, model="known/does-not-exist").complete(HELLO)


def test_connection_refused_is_unavailable() -> None:
    client = create_openrouter_client(api_key="x", base_url="http://127.0.0.1:9/v1", timeout=2)
    with pytest.raises(ProviderUnavailable):
        client.complete(HELLO)


def test_no_key_is_a_config_error_saying_how_to_set_one() -> None:
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY"):
        create_openrouter_client()


def test_settings_supply_key_model_and_url(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator(api_key="sk-from-env")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-from-env")
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MODEL", "sim/model")
    from aita.config import get_config

    get_config.cache_clear()
    client = create_openrouter_client()
    assert client.complete(HELLO).model == "sim/model"
    assert "sk-from-env" not in repr(client)


def test_local_image_goes_inline_as_a_data_url(simulator: SimulatorFactory, tmp_path: Path) -> None:
    sim = simulator()
    image = tmp_path / "page_001.png"
    image.write_bytes(PNG_1PX)
    url = image_to_data_url(image)
    assert url.startswith("data:image/png;base64,")
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "read this"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    response = client_for(sim).complete([LLMMessage(role="user", content=content)])
    assert response.content == "[sim] read this [images: 1]"
    assert sim.stats.images_received == 1


def test_non_image_file_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    with pytest.raises(ValueError, match="not a readable image"):
        image_to_data_url(notes)


class Verdict(BaseModel):
    score: int
    reasons: list[str]
    passed: bool


def test_json_schema_request_gets_a_valid_instance(simulator: SimulatorFactory) -> None:
    sim = simulator()
    response = client_for(sim).complete(HELLO, response_format=json_schema_response_format(Verdict))
    verdict = Verdict.model_validate_json(response.content)
    assert verdict.reasons
