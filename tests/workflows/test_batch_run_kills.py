"""``aita batch run`` in a child process, SIGKILLed and run again: every line once, in order."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from aita.engine import SpendLedger, Usage, cost_of
from aita.simulator import ProviderSimulator
from aita.simulator.batches import BatchSimulation
from tests.support.doubles import TEST_KEY, SimulatorFactory

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 8
MODEL = "google/gemini-2.5-flash"  # AITA_MODEL's default: the price table knows it


def start(base_url: str, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AITA_BASE_URL": base_url,
        "OPENROUTER_API_KEY": TEST_KEY,
        "AITA_RATE_LIMIT_RPS": "none",  # the simulator has no limit
    }
    return subprocess.Popen(
        [sys.executable, "-m", "aita", "batch", "run", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when(proc: subprocess.Popen[str], condition: Callable[[], bool]) -> str:
    """SIGKILL once ``condition()`` holds; what the run had printed on stderr."""
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    return proc.communicate()[1]


def calls_reached(sim: ProviderSimulator, calls: int) -> bool:
    return sim.stats.requests >= calls


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def results(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n")  # whole lines only, whenever it was killed
    return [json.loads(line) for line in data.splitlines()]


def answer_of(line: dict[str, object]) -> str:
    body = line["response"]["body"]  # type: ignore[index]
    return str(body["choices"][0]["message"]["content"])  # type: ignore[index]


@pytest.mark.slow
def test_5000_lines_killed_twice_end_complete_in_order_with_only_in_flight_calls_repeated(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = simulator(latency=0.005, announce=False)
    count, garbage_at = 5000, 1234
    lines = [json.dumps({"custom_id": f"r{i:05d}", "prompt": f"task {i}"}) for i in range(count)]
    lines.insert(garbage_at, "{garbage")
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    args = ("requests.jsonl", "-o", "results.jsonl", "--workers", str(WORKERS))
    written, errs = [], []
    for kill in (1, 2):
        proc = start(sim.base_url, *args)
        errs.append(kill_when(proc, partial(calls_reached, sim, 1500 * kill)))
        written.append(len(results(tmp_path / "results.jsonl")))
    code, out, err = finish(start(sim.base_url, *args))
    assert code == 1, err  # the garbage line failed; everything else is answered
    assert written[0] > 0 and written[1] > written[0] and written[1] < count
    final = results(tmp_path / "results.jsonl")
    assert len(final) == count + 1
    bad = final.pop(garbage_at)
    assert bad["custom_id"] is None and f"line {garbage_at + 1}: not JSON" in str(bad["error"])
    assert [line["custom_id"] for line in final] == [f"r{i:05d}" for i in range(count)]
    assert [answer_of(line) for line in final] == [f"[sim] task {i}" for i in range(count)]
    assert sum(sim.stats.ok_by_prompt.values()) >= count
    assert sim.stats.repeated_calls() <= 2 * WORKERS  # at most the calls in flight at each kill
    assert f"requests.jsonl line {garbage_at + 1}: not JSON" in "".join([*errs, err])
    summary = re.search(r"(\d+) lines: (.*)", out)
    assert summary is not None, out
    said = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary[2])}
    assert (int(summary[1]), said["failed"], said["done"] + said.get("reused", 0)) == (
        count + 1,
        1,
        count,
    )


@pytest.mark.slow
def test_batch_api_with_10_percent_failing_items_killed_while_polling_finishes_at_half_price(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = simulator(announce=False, report_cost=False)
    sim.batch_api.simulation = BatchSimulation(processing_seconds=2.0, failure_rate=0.1)
    stats = sim.batch_api.stats
    count = 2000
    lines = [json.dumps({"custom_id": f"r{i:05d}", "prompt": f"task {i}"}) for i in range(count)]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    args = ("requests.jsonl", "-o", "results.jsonl", "--batch-api", "--poll-interval", "0.1")
    proc = start(sim.base_url, *args)
    kill_when(proc, lambda: stats.batches_created == 1 and stats.retrievals >= 3)
    assert (stats.uploads, stats.uploaded_requests) == (1, count)
    code, out, err = finish(start(sim.base_url, *args))
    assert code == 0, err
    final = results(tmp_path / "results.jsonl")
    assert [line["custom_id"] for line in final] == [f"r{i:05d}" for i in range(count)]
    assert [answer_of(line) for line in final] == [f"[sim] task {i}" for i in range(count)]
    # The killed run's batch was collected, not submitted again: only failed items went twice.
    assert stats.failed_items > 150
    assert stats.uploaded_requests == count + stats.failed_items
    assert stats.repeated_answers() == 0
    assert stats.uploads == stats.batches_created >= 2
    # The cost shown is the batch price: half the price table's for the tokens used.
    usages = [line["response"]["body"]["usage"] for line in final]  # type: ignore[index]
    half = sum(
        cost_of(MODEL, Usage(u["prompt_tokens"], u["completion_tokens"])) or 0.0 for u in usages
    )
    half /= 2
    shown = re.search(r"cost: \$([0-9.]+) at the batch price", out)
    assert shown is not None, out
    assert float(shown.group(1)) == pytest.approx(half, abs=1e-4)
    ledger = list(SpendLedger(os.environ["AITA_SPEND_LEDGER"]).entries())
    assert len(ledger) == count
    assert sum(entry.cost or 0.0 for entry in ledger) == pytest.approx(half)


@pytest.mark.slow
def test_ctrl_c_exits_130_printing_the_command_that_finishes_the_file(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = simulator(latency=0.02, announce=False)
    count = 1000
    lines = [json.dumps({"custom_id": f"r{i:05d}", "prompt": f"task {i}"}) for i in range(count)]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    proc = start(sim.base_url, "requests.jsonl", "-o", "results.jsonl", "--workers", str(WORKERS))
    deadline = time.monotonic() + 60
    while sim.stats.requests < 200 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130, err
    resume = re.search(r"resume with: aita (.*)", err)
    assert resume is not None, err
    assert 0 < len(results(tmp_path / "results.jsonl")) < count
    code, _, err = finish(start(sim.base_url, *resume.group(1).split()[2:]))
    assert code == 0, err
    final = results(tmp_path / "results.jsonl")
    assert [answer_of(line) for line in final] == [f"[sim] task {i}" for i in range(count)]
    assert sim.stats.repeated_calls() <= WORKERS


@pytest.mark.slow
def test_batch_api_killed_at_random_instants_never_pays_for_an_answer_twice(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = simulator(announce=False, report_cost=False)
    sim.batch_api.simulation = BatchSimulation(processing_seconds=1.5, failure_rate=0.2)
    stats = sim.batch_api.stats
    count = 300
    lines = [json.dumps({"custom_id": f"r{i:05d}", "prompt": f"task {i}"}) for i in range(count)]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    args = ("requests.jsonl", "-o", "results.jsonl", "--batch-api", "--poll-interval", "0.05")
    rng = random.Random(7)
    for _ in range(6):
        proc = start(sim.base_url, *args)
        time.sleep(rng.uniform(1.5, 3.0))  # starting Python and the SDK takes ~1.5 s
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    code, _, err = finish(start(sim.base_url, *args))
    assert code == 0, err
    final = results(tmp_path / "results.jsonl")
    assert [answer_of(line) for line in final] == [f"[sim] task {i}" for i in range(count)]
    assert stats.repeated_answers() == 0  # every answer was paid for once
    assert stats.uploaded_requests == count + stats.failed_items  # only failures went again
