"""``aita batch run`` as a new user meets it: against ``aita simulate``, resuming, reporting."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from aita.cli import main
from aita.config import get_config
from aita.engine import create_openrouter_client
from aita.workflows.batchfile import BatchFileJob
from tests.support.doubles import TEST_KEY, SimulatorFactory
from tests.workflows.test_batch_run import prompts, read_results, write_requests


def test_a_run_against_the_simulator_resumes_against_the_simulator(
    simulator: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator()  # as `aita simulate` serves: every answer says it is simulated
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    get_config.cache_clear()
    requests = write_requests(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    command = ["batch", "run", str(requests), "-o", str(out), "--yes"]
    assert main(command) == 0
    out.write_bytes(out.read_bytes().splitlines(keepends=True)[0])  # stopped after one line
    assert main(command) == 0
    results = read_results(out)
    assert [r["custom_id"] for r in results] == ["r0000", "r0001", "r0002"]
    assert all(r["simulated"] for r in results)
    assert main(command) == 0  # and run again, it has nothing left to do
    assert len(read_results(out)) == 3


def test_simulated_results_are_not_continued_by_a_real_provider(
    simulator: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    announced, real = simulator(), simulator(announce=False)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    requests = write_requests(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    command = ["batch", "run", str(requests), "-o", str(out), "--yes"]
    monkeypatch.setenv("AITA_BASE_URL", announced.base_url)
    get_config.cache_clear()
    assert main(command) == 0
    out.write_bytes(out.read_bytes().splitlines(keepends=True)[0])
    monkeypatch.setenv("AITA_BASE_URL", real.base_url)
    get_config.cache_clear()
    assert main(command) == 2
    assert "holds simulated answers" in capsys.readouterr().err
    assert real.stats.requests == 0


def test_the_progress_bar_counts_every_line_of_the_job_even_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AITA_SHOW_PROGRESS", "true")
    get_config.cache_clear()
    requests = write_requests(tmp_path / "in.jsonl", prompts(10))
    out = tmp_path / "out.jsonl"
    command = ["batch", "run", str(requests), "-o", str(out), "--dry-run"]
    assert main(command) == 0
    first = capsys.readouterr().err
    assert "Executing 10 tasks" in first and "100% | 10/10 |" in first
    assert first.rstrip().endswith("ok=10 failed=0 retries=0 cost=$0 (simulated)")
    out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:4]))
    assert main(command) == 0
    resumed = capsys.readouterr().err
    assert " 40% | 4/10 |" in resumed  # where the earlier run stopped
    assert "100% | 10/10 |" in resumed and "ok=6 failed=0" in resumed


def test_simulated_calls_cost_nothing_and_say_so_everywhere(
    simulator: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = simulator()  # as `aita simulate`: it reports a cost in its usage, and is simulated
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    monkeypatch.setenv("AITA_MODEL", "openai/gpt-4o-mini")  # a priced model's name
    get_config.cache_clear()
    requests = write_requests(tmp_path / "in.jsonl", prompts(5))
    assert main(["batch", "run", str(requests), "-o", str(tmp_path / "out.jsonl"), "--yes"]) == 0
    out, err = capsys.readouterr()
    assert "cost: $0 (simulated)" in out
    assert "about to make" not in err and "estimated $" not in err  # nothing to pay for
    assert main(["demo", "--tasks", "20", "--no-progress"]) == 0
    assert "cost: $0 (simulated)" in capsys.readouterr().out


def test_the_estimate_before_paid_calls_is_a_range_that_holds_the_real_cost(
    simulator: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = simulator(announce=False, report_cost=False)  # a real provider, priced by the table
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    monkeypatch.setenv("AITA_MODEL", "openai/gpt-4o-mini")
    get_config.cache_clear()
    lines = [
        {"custom_id": f"r{i}", "prompt": f"Summarise item {i} of the list " * 20, "max_tokens": 800}
        for i in range(20)
    ]
    requests = write_requests(tmp_path / "in.jsonl", lines)
    job = BatchFileJob(requests, tmp_path / "out.jsonl")
    client = create_openrouter_client()
    calls, cost = job.estimate(client)
    client.close()
    assert calls == 20 and cost is not None
    assert main(["batch", "run", str(requests), "-o", str(tmp_path / "out.jsonl"), "--yes"]) == 0
    err = capsys.readouterr().err
    assert f"(estimated ${cost.low:.4f} (the prompts alone) to ${cost.high:.4f}" in err
    ledger = [json.loads(line) for line in (tmp_path / "spend.jsonl").read_text().splitlines()]
    spent = sum(entry["cost"] for entry in ledger)
    assert cost.low <= spent <= cost.high


def test_rate_limit_paces_a_dry_run_too(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", prompts(6))
    command = ["batch", "run", str(requests), "-o", str(tmp_path / "out.jsonl"), "--dry-run"]
    started = time.monotonic()
    assert main([*command, "--rate-limit", "2"]) == 0
    assert time.monotonic() - started >= 2.4  # six starts at 2/s, with no burst: 2.5 s at least


def test_lines_that_are_not_requests_are_to_be_fixed_not_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [*prompts(2), '{"custom_id": "x"}'])
    assert main(["batch", "run", str(requests), "-o", str(tmp_path / "o.jsonl"), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert f"1 line(s) are not requests (said above): fix them in {requests}" in out
    assert "retry" not in out
