"""Shared fixtures: an isolated environment and the provider simulator on an ephemeral port."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, settings
from tqdm import tqdm

from aita.config import get_config
from aita.simulator import ProviderSimulator, SimulatorConfig
from tests.support.doubles import SimulatorFactory

# tqdm's class-wide lock includes a multiprocessing semaphore, shared with every process forked
# after the first bar. mutmut forks one process per mutant from a parent that ran the tests: one
# that ends holding it (at exit, or killed) leaves every later bar waiting until its test times
# out, and mutmut counts that mutant as killed. A thread lock is each process's own.
tqdm.set_lock(threading.RLock())

# Mutation runs (scripts/mutation.py) only need to know that a property fails: shrinking and
# explaining the failure under mutmut's trampolines takes longer than the test's timeout.
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate])


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run every test in its own folder with no AITA_* settings from the outside world."""
    for name in list(os.environ):
        if name.startswith("AITA_") or name == "OPENROUTER_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AITA_SHOW_PROGRESS", "false")
    monkeypatch.setenv("AITA_SPEND_LEDGER", str(tmp_path / "spend.jsonl"))
    monkeypatch.chdir(tmp_path)
    get_config.cache_clear()
    # A command run in-process with -q leaves the library's log at ERROR: no later test's
    # warning would reach caplog.
    logging.getLogger("aita").setLevel(logging.NOTSET)
    yield tmp_path
    get_config.cache_clear()
    logging.getLogger("aita").setLevel(logging.NOTSET)


@pytest.fixture
def simulator() -> Iterator[SimulatorFactory]:
    """``simulator(rate_limit=..., latency=...)`` starts a simulator that stops after the test."""
    started: list[ProviderSimulator] = []

    def start(**config: object) -> ProviderSimulator:
        sim = ProviderSimulator(SimulatorConfig(**config)).start()  # type: ignore[arg-type]
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()
