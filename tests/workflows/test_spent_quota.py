"""A provider whose quota is spent answers every call 429 with a wait of hours: the run stops at
once saying that wait, exit 1, and the next run continues where it stopped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aita.cli import main
from aita.simulator import ProviderSimulator
from tests.workflows.test_batch_run import prompts, provider, read_results, write_requests

__all__ = ["provider"]


def test_a_wait_longer_than_the_outage_budget_stops_the_run_saying_the_wait(
    provider: ProviderSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    provider.config.quota_spent_for = 99999
    requests = write_requests(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "out.jsonl"
    started = time.monotonic()
    assert main(["batch", "run", str(requests), "-o", str(out), "--yes", "--workers", "1"]) == 1
    assert time.monotonic() - started < 20  # not minutes of retries at 120 s apart
    assert provider.stats.requests == 1  # the first refusal says it all
    err = capsys.readouterr().err
    assert "99999s (27.8 h)" in err and "retry-after" in err and "AITA_OUTAGE_BUDGET" in err

    provider.config.quota_spent_for = None  # the next day
    assert main(["batch", "run", str(requests), "-o", str(out), "--yes"]) == 0
    assert [r["custom_id"] for r in read_results(out)] == [f"r{i:04d}" for i in range(4)]
    assert all(r["error"] is None for r in read_results(out))
