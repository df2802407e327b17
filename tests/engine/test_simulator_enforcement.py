"""The simulator's strict enforcement modes, over real HTTP: what a client meets at a gateway."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from aita.simulator import ProviderSimulator, SimulatorConfig
from tests.support.doubles import SimulatorFactory


def post(sim: ProviderSimulator) -> tuple[int, dict[str, str]]:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        f"{sim.base_url}/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


@pytest.mark.parametrize("enforcement", ["sliding", "fixed"])
def test_a_strict_window_admits_the_rate_and_refuses_the_next_with_retry_after(
    simulator: SimulatorFactory, enforcement: str
) -> None:
    sim = simulator(rate_limit=5, enforcement=enforcement)
    statuses = [post(sim) for _ in range(8)]  # well within one second: no burst allowance
    admitted = [s for s, _ in statuses if s == 200]
    refused = [h for s, h in statuses if s == 429]
    assert 5 <= len(admitted) <= 5 + (enforcement == "fixed") * 5  # a second may turn over
    assert refused and all(0 < int(h["retry-after-ms"]) <= 1000 for h in refused)
    assert sim.stats.rate_limited == len(refused)


def test_an_injected_refusal_is_one_429_whatever_the_limit(simulator: SimulatorFactory) -> None:
    sim = simulator()
    sim.refuse_next(retry_after=0.25)
    (first, headers), (second, _) = post(sim), post(sim)
    assert (first, second) == (429, 200)
    assert headers["retry-after-ms"] == "250"


def test_an_unknown_enforcement_is_refused() -> None:
    with pytest.raises(ValueError, match="enforcement"):
        ProviderSimulator(SimulatorConfig(rate_limit=5, enforcement="leaky"))
