"""``aita batch run`` when something goes wrong, as a user meets it: a line no request key can
hold, a cache row that does not read, a disk that fills, a cap that is not a count, a provider
that was never there, a base URL without /v1, and what a Batch API provider echoes back."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aita.cli import main
from aita.simulator import ProviderSimulator
from aita.simulator.batches import BatchSimulation
from tests.support.doubles import TEST_KEY, SimulatorFactory, silent_server

#: How long a user may wait to hear that nothing answers.
FAIL_FAST = 15.0


def write_requests(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


def prompts(n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i:04d}", "prompt": f"question {i}"} for i in range(n)]


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def provider(simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch) -> ProviderSimulator:
    sim = simulator(announce=False)
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    return sim


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_line_nested_300_deep_fails_alone_and_every_other_line_is_written(
    provider: ProviderSimulator, tmp_path: Path
) -> None:
    lines: list[Any] = prompts(20)
    lines[5] = '{"custom_id": "r0005", "prompt": "deep", "extra": ' + "[" * 300 + "]" * 300 + "}"
    requests = write_requests(tmp_path / "in.jsonl", lines)
    for _ in range(2):  # and a re-run does the same, without hanging
        assert main(["batch", "run", str(requests), "-o", "out.jsonl"]) == 1
        results = read_results(tmp_path / "out.jsonl")
        assert [r["custom_id"] for r in results] == [f"r{i:04d}" for i in range(20)]
        assert [r["error"] is not None for r in results].count(True) == 1
        assert "cannot be written as JSON" in results[5]["error"]["message"]


def test_a_cache_row_whose_usage_is_not_json_is_asked_again(
    provider: ProviderSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AITA_CACHE", "true")
    monkeypatch.setenv("AITA_CACHE_PATH", str(tmp_path / "cache.sqlite"))
    requests = write_requests(tmp_path / "in.jsonl", prompts(20))
    assert main(["batch", "run", str(requests), "-o", "first.jsonl"]) == 0
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        assert db.execute("UPDATE responses SET usage = '{not json'").rowcount == 20
    assert main(["batch", "run", str(requests), "-o", "second.jsonl"]) == 0
    assert len(read_results(tmp_path / "second.jsonl")) == 20


def _failing_writes(monkeypatch: pytest.MonkeyPatch, prefix: bytes, after: int) -> None:
    """``os.write`` of lines starting with ``prefix`` fails with ENOSPC after ``after`` of them:
    the disk of that file is full."""
    real_write = os.write
    count = [0]

    def write(fd: int, data: bytes) -> int:
        if data.startswith(prefix):
            count[0] += 1
            if count[0] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize(
    ("prefix", "names"),
    [(b'{"task_id"', "checkpoint"), (b'{"id":"batch_req_', "out.jsonl")],
    ids=["journal", "results"],
)
def test_a_full_disk_stops_the_run_naming_the_file_and_the_rest_resumes(
    provider: ProviderSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    prefix: bytes,
    names: str,
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", prompts(300))
    with monkeypatch.context() as patch:
        _failing_writes(patch, prefix, after=131)
        started = time.monotonic()
        assert main(["batch", "run", str(requests), "-o", "out.jsonl"]) == 1
        assert time.monotonic() - started < FAIL_FAST
    err = capsys.readouterr().err
    assert names in err and "No space left on device" in err
    assert "internal error" not in err
    written = len(read_results(tmp_path / "out.jsonl"))
    assert written <= 300
    assert main(["batch", "run", str(requests), "-o", "out.jsonl"]) == 0
    results = read_results(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in results] == [f"r{i:04d}" for i in range(300)]


@pytest.mark.parametrize("budget", [None, "100000"], ids=["no budget", "token budget"])
def test_max_tokens_that_is_not_a_count_fails_its_line_and_the_rest_are_answered(
    provider: ProviderSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    budget: str | None,
) -> None:
    if budget is not None:
        monkeypatch.setenv("AITA_TOKENS_PER_MINUTE", budget)
    lines: list[Any] = prompts(10)
    lines[3] = {**lines[3], "max_tokens": "many"}
    requests = write_requests(tmp_path / "in.jsonl", lines)
    assert main(["batch", "run", str(requests), "-o", "out.jsonl"]) == 1
    results = read_results(tmp_path / "out.jsonl")
    assert len(results) == 10
    assert "max_tokens" in results[3]["error"]["message"]
    assert sum(r["error"] is not None for r in results) == 1
    assert "internal error" not in capsys.readouterr().err


@pytest.mark.parametrize("scheme", ["http", "https"], ids=["refused", "tls to plain http"])
def test_a_provider_that_never_answers_stops_the_run_within_seconds_saying_why(
    simulator: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scheme: str,
) -> None:
    if scheme == "http":
        url = f"http://127.0.0.1:{closed_port()}/v1"
    else:  # TLS spoken to a server that speaks plain HTTP
        url = simulator().base_url.replace("http://", "https://")
    monkeypatch.setenv("AITA_BASE_URL", url)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    requests = write_requests(tmp_path / "in.jsonl", prompts(50))
    started = time.monotonic()
    assert main(["batch", "run", str(requests), "-o", "out.jsonl"]) == 1
    assert time.monotonic() - started < FAIL_FAST
    err = capsys.readouterr().err
    assert f"cannot reach {url}" in err
    if scheme == "http":
        assert "connection refused" in err.lower()
    assert "outage" not in err


def test_a_base_url_without_v1_stops_the_batch_at_once_with_the_hint(
    provider: ProviderSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = provider.base_url.removesuffix("/v1")
    monkeypatch.setenv("AITA_BASE_URL", root)
    requests = write_requests(tmp_path / "in.jsonl", prompts(200))
    assert main(["batch", "run", str(requests), "-o", "out.jsonl"]) == 1
    out = capsys.readouterr()
    assert "/v1" in out.err + out.out
    results = read_results(tmp_path / "out.jsonl")
    assert len(results) == 200
    cancelled = [r for r in results if r["error"] and r["error"]["code"] == "cancelled"]
    assert len(cancelled) >= 150  # stopped at once: the rest were never asked
    assert all("/v1" in r["error"]["message"] for r in results if r["error"])


def test_a_batch_api_run_redacts_caps_and_sanitises_what_the_provider_sends(
    provider: ProviderSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key echoed in an answer and in an item error, a 20 KB error message and a model name
    of 5,000 characters with escape codes: what lands in results, checkpoint, ledger and stderr is
    redacted, bounded and printable, as the live path makes it."""

    def responder(request: dict[str, Any]) -> str:
        text = request["messages"][-1]["content"]
        if text.startswith("fail"):
            raise RuntimeError(f"the key {TEST_KEY} " + "x" * 20_000)
        return f"echo: {TEST_KEY}"

    provider.config.responder = responder
    provider.batch_api.simulation = BatchSimulation(processing_seconds=0.05)
    model = "\x1b[31m" + "m" * 5000
    lines = [
        {"custom_id": "a", "prompt": "echo", "model": model},
        {"custom_id": "b", "prompt": "fail"},
    ]
    requests = write_requests(tmp_path / "in.jsonl", lines)
    args = ["-o", "out.jsonl", "--batch-api", "--poll-interval", "0.05"]
    assert main(["batch", "run", str(requests), *args]) == 1
    err = capsys.readouterr().err
    saved = {
        "results": (tmp_path / "out.jsonl").read_text(),
        "stderr": err,
        "checkpoints": "".join(
            p.read_text() for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()
        ),
        "ledger": (tmp_path / "spend.jsonl").read_text(),
    }
    for where, text in saved.items():
        assert TEST_KEY not in text, where
        assert "\x1b" not in text and "\\u001b" not in text, where
        assert "m" * 201 not in text, where
    results = read_results(tmp_path / "out.jsonl")
    assert results[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: [redacted]"
    assert len(results[1]["error"]["message"]) <= 1000


def test_a_batch_api_run_against_a_provider_that_is_not_there_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    monkeypatch.setenv("AITA_BASE_URL", url)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    requests = write_requests(tmp_path / "in.jsonl", prompts(5))
    started = time.monotonic()
    assert main(["batch", "run", str(requests), "-o", "out.jsonl", "--batch-api"]) == 1
    assert time.monotonic() - started < 30  # the SDK's own retries of the upload
    assert f"cannot reach {url}" in capsys.readouterr().err


def watch(condition: Callable[[], bool], then: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + 20
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        then()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["reset", "503"])
def test_an_outage_while_a_batch_api_job_is_polled_exits_1_and_the_next_run_collects_it(
    provider: ProviderSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    """The provider being down is no fault of the input: exit 1 (not 2), one line naming the
    URL, the cause and the batch kept; the same command run again collects that batch."""
    monkeypatch.setenv("AITA_OUTAGE_BUDGET", "0.3")
    provider.batch_api.simulation = BatchSimulation(processing_seconds=30)
    stats = provider.batch_api.stats
    watcher = watch(lambda: stats.retrievals >= 1, lambda: provider.start_outage(60, kind=kind))
    requests = write_requests(tmp_path / "in.jsonl", prompts(4))
    command = ["batch", "run", str(requests), "-o", "out.jsonl", "--batch-api"]
    assert main([*command, "--poll-interval", "0.05"]) == 1
    watcher.join()
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("aita:")]
    cause = {"reset": f"cannot reach {provider.base_url}: ", "503": "HTTP 503"}[kind]
    assert len(said) == 1 and cause in said[0]
    assert said[0].startswith(
        f"aita: provider outage: cannot poll the Batch API at {provider.base_url}: "
        "no answer for over 0.3s ("
    )
    assert said[0].endswith(
        "); the batch(es) batch_sim000002 keep running at the provider: run again to collect them"
    )

    provider.start_outage(0)
    provider.batch_api.simulation.processing_seconds = 0
    assert main([*command, "--poll-interval", "0.05"]) == 0
    assert [r["custom_id"] for r in read_results(tmp_path / "out.jsonl")] == [
        f"r{i:04d}" for i in range(4)
    ]
    assert (stats.uploads, stats.batches_created) == (1, 1)  # collected, not submitted again


def test_cancel_while_the_provider_is_down_exits_1_saying_so(
    provider: ProviderSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    provider.batch_api.simulation = BatchSimulation(processing_seconds=30)
    stats = provider.batch_api.stats
    requests = write_requests(tmp_path / "in.jsonl", prompts(2))
    watcher = watch(lambda: stats.retrievals >= 1, lambda: os.kill(os.getpid(), signal.SIGINT))
    command = ["batch", "run", str(requests), "-o", "out.jsonl", "--batch-api"]
    assert main([*command, "--poll-interval", "0.05"]) == 130
    watcher.join()
    provider.start_outage(60, kind="503")
    capsys.readouterr()
    assert main(["batch", "cancel", "-o", "out.jsonl"]) == 1
    assert capsys.readouterr().err.strip().startswith("aita: provider unavailable (HTTP 503): ")
    provider.start_outage(0)
    assert main(["batch", "cancel", "-o", "out.jsonl"]) == 0
    assert stats.cancels == 1


@pytest.fixture
def silent() -> Iterator[str]:
    with silent_server() as (url, _):
        yield url


@pytest.mark.slow
def test_a_provider_that_takes_connections_and_never_answers_stops_the_run_saying_so(
    silent: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing has ever answered: a timed-out call is no slow answer but a server that is not
    serving. The run stops after the first contact's budget, not after every task has spent its
    20 retries at the per-call timeout."""
    monkeypatch.setenv("AITA_BASE_URL", silent)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    monkeypatch.setenv("AITA_REQUEST_TIMEOUT", "0.5")
    monkeypatch.setenv("AITA_MAX_RETRIES", "20")
    requests = write_requests(tmp_path / "in.jsonl", prompts(8))
    started = time.monotonic()
    assert main(["batch", "run", str(requests), "-o", "out.jsonl"]) == 1
    # 5 s for the question whether it is a simulator, the first timeout, 10 s of first contact
    assert time.monotonic() - started < FAIL_FAST + 10
    err = capsys.readouterr().err
    assert f"aita: cannot reach {silent}: timed out after 0.5s" in err.splitlines()
    assert "outage" not in err
