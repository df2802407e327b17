"""The provider a run talks to: the configured OpenAI-compatible endpoint, or the built-in
simulator for a dry run. Every command opens its client here, so a dry run can never reach a
real provider and a real run never gets simulated answers."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from aita.config import get_config
from aita.engine import SIMULATED_HEADER, OpenAICompatibleClient, create_openrouter_client
from aita.errors import ConfigError
from aita.simulator import ProviderSimulator, SimulatorConfig
from aita.simulator.server import Responder

#: the model name of a dry run's calls: the simulator's, never a priced one
DRY_RUN_MODEL = "dry-run/simulator"


@contextmanager
def open_client(
    *,
    dry_run: bool = False,
    model: str | None = None,
    responder: Responder | None = None,
) -> Iterator[OpenAICompatibleClient]:
    """The configured provider; with ``dry_run``, an in-process simulator answering through
    ``responder`` (the pipelines' own answers), torn down when the block ends."""
    if not dry_run:
        try:
            client = create_openrouter_client(model=model)
        except ConfigError as error:
            raise ConfigError(f"{error}; or try --dry-run to use the built-in simulator") from None
        try:
            yield client
        finally:
            client.close()
        return
    config = SimulatorConfig(
        latency=get_config().dry_run_latency, report_cost=False, responder=responder
    )
    with ProviderSimulator(config) as sim:
        client = create_openrouter_client(
            api_key="dry-run", base_url=sim.base_url, model=DRY_RUN_MODEL
        )
        try:
            yield client
        finally:
            client.close()


def announces_simulation(base_url: str, timeout: float = 5.0) -> bool:
    """Whether the server at ``base_url`` says its answers are simulated (``aita simulate``
    does, on every answer): asked with one ``GET /models``, without the API key. A server
    that does not answer, or answers without saying so, is a real provider."""
    request = urllib.request.Request(base_url.rstrip("/") + "/models", method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(response.headers.get(SIMULATED_HEADER) == "true")
    except (urllib.error.URLError, OSError, ValueError):
        return False
