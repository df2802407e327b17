"""``aita batch run``: request lines in, result lines out, in order, resumable, sharded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aita.cli import main
from aita.simulator import ProviderSimulator
from aita.simulator.batches import BatchSimulation
from aita.workflows.batchfile import ResultsFile, Shard, parse_request_line
from tests.support.doubles import TEST_KEY, SimulatorFactory, interrupt_when

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "batch" / "requests.jsonl"


def write_requests(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


def prompts(n: int, prefix: str = "question") -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i:04d}", "prompt": f"{prefix} {i}"} for i in range(n)]


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def answer_of(line: dict[str, Any]) -> str:
    return str(line["response"]["body"]["choices"][0]["message"]["content"])


@pytest.fixture
def provider(simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch) -> ProviderSimulator:
    """A simulator standing in for a real provider (it does not say it is one), as configured."""
    sim = simulator(announce=False)
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    return sim


def test_every_request_line_gets_its_own_result_line_in_input_order(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", prompts(40))
    assert main(["batch", "run", str(requests), "-o", "out.jsonl", "--dry-run"]) == 0
    results = read_results(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in results] == [f"r{i:04d}" for i in range(40)]
    assert [answer_of(r) for r in results] == [f"[sim] question {i}" for i in range(40)]
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in results)
    assert all(r["simulated"] for r in results)  # a dry run's answers say so


def test_the_sample_requests_run_in_every_line_format(tmp_path: Path) -> None:
    assert main(["batch", "run", str(EXAMPLE), "-o", "out.jsonl", "--dry-run"]) == 0
    results = read_results(tmp_path / "out.jsonl")
    ids = [json.loads(line)["custom_id"] for line in EXAMPLE.read_text().splitlines()]
    assert [r["custom_id"] for r in results] == ids
    sentiment = json.loads(answer_of(results[2]))  # a json_schema response format, answered
    assert set(sentiment) == {"label", "confidence"}


def test_request_parameters_reach_the_provider_as_given(
    provider: ProviderSimulator, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []

    def record(request: dict[str, Any]) -> None:
        seen.append(request)  # and the default answer

    provider.config.responder = record
    requests = write_requests(
        tmp_path / "in.jsonl",
        [
            {
                "custom_id": "a",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "openai/gpt-4o-mini",
                    "messages": [{"role": "user", "content": "hi"}],
                    "temperature": 0.2,
                    "max_tokens": 7,
                    "seed": 3,
                },
            },
            {"custom_id": "b", "prompt": "bare", "top_p": 0.5},
        ],
    )
    assert main(["batch", "run", str(requests), "-o", "out.jsonl", "--model", "m/default"]) == 0
    by_text = {r["messages"][-1]["content"]: r for r in seen}
    assert by_text["hi"]["model"] == "openai/gpt-4o-mini"
    assert (by_text["hi"]["temperature"], by_text["hi"]["max_tokens"], by_text["hi"]["seed"]) == (
        0.2,
        7,
        3,
    )
    assert by_text["bare"]["model"] == "m/default"  # --model: for lines that name none
    assert by_text["bare"]["top_p"] == 0.5


def test_a_line_that_is_not_a_request_becomes_an_error_line_with_its_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Any] = [*prompts(3), "{this is not json", *prompts(2, "later")]
    lines[4]["custom_id"] = "r9000"
    requests = write_requests(tmp_path / "in.jsonl", lines)
    assert main(["batch", "run", str(requests), "-o", "out.jsonl", "--dry-run"]) == 1
    results = read_results(tmp_path / "out.jsonl")
    assert len(results) == 6
    bad = results[3]
    assert bad["custom_id"] is None and bad["response"] is None
    assert bad["error"]["code"] == "invalid_request_line"
    assert "line 4: not JSON" in bad["error"]["message"]
    assert answer_of(results[4]) == "[sim] later 0"  # the run went on
    err = capsys.readouterr().err
    assert "in.jsonl line 4: not JSON" in err


def test_the_end_line_counts_lines_as_checkpoints_list_counts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = {"custom_id": "short", "prompt": "a question answered at length", "max_tokens": 2}
    requests = write_requests(tmp_path / "in.jsonl", [*prompts(3), short, "{not json"])
    assert main(["batch", "run", str(requests), "-o", "out.jsonl", "--dry-run"]) == 1
    said = capsys.readouterr().out
    assert "out.jsonl: 5 lines: 3 done, 1 flagged, 1 failed\n" in said  # the cut-off answer
    assert (
        read_results(tmp_path / "out.jsonl")[3]["response"]["body"]["choices"][0]["finish_reason"]
        == "length"
    )
    assert main(["checkpoints", "list"]) == 0
    assert "5 tasks: 3 done, 1 flagged, 1 failed" in capsys.readouterr().out
    # Run again: every line is already written.
    assert main(["batch", "run", str(requests), "-o", "out.jsonl", "--dry-run"]) == 1
    assert "out.jsonl: 5 lines: 0 done, 4 reused, 1 failed\n" in capsys.readouterr().out


def test_failed_lines_are_asked_again_by_the_next_run_and_nothing_else_is(
    provider: ProviderSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AITA_MAX_RETRIES", "0")
    lines: list[Any] = [*prompts(6)]
    lines[2] = "{not json"  # fails without a call
    requests = write_requests(tmp_path / "in.jsonl", lines)
    run = ["batch", "run", str(requests), "-o", "out.jsonl", "--yes"]
    provider.config.error_rate = 1.0
    assert main(run) == 1
    assert [r["error"] is None for r in read_results(tmp_path / "out.jsonl")] == [False] * 6
    assert "run the same command again to retry them" in capsys.readouterr().out
    provider.config.error_rate = 0.0
    lines[2] = {"custom_id": "fixed", "prompt": "question 2"}
    write_requests(requests, lines)
    assert main(run) == 0
    results = read_results(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in results] == [
        "r0000",
        "r0001",
        "fixed",
        "r0003",
        "r0004",
        "r0005",
    ]
    assert [answer_of(r) for r in results] == [f"[sim] question {i}" for i in range(6)]
    assert "6 lines: 6 done, 0 failed" in capsys.readouterr().out
    provider.config.error_rate = 1.0  # every line stands: no call, nothing to fail
    calls = provider.stats.requests
    assert main(run) == 0 and provider.stats.requests == calls


def test_a_failed_line_is_retried_and_the_lines_after_it_come_from_the_journal(
    provider: ProviderSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[Any] = [*prompts(5)]
    lines[1] = "{not json"
    requests = write_requests(tmp_path / "in.jsonl", lines)
    run = ["batch", "run", str(requests), "-o", "out.jsonl", "--yes"]
    assert main(run) == 1
    calls = provider.stats.requests
    lines[1] = {"custom_id": "r0001", "prompt": "question 1"}
    write_requests(requests, lines)
    capsys.readouterr()
    assert main(run) == 0
    assert provider.stats.requests == calls + 1  # only the line that failed
    assert "5 lines: 1 done, 4 reused, 0 failed" in capsys.readouterr().out
    results = read_results(tmp_path / "out.jsonl")
    assert [answer_of(r) for r in results] == [f"[sim] question {i}" for i in range(5)]


def test_a_line_whose_request_changed_is_never_answered_with_its_old_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = prompts(8)
    requests = write_requests(tmp_path / "in.jsonl", lines)
    run = ["batch", "run", str(requests), "-o", "out.jsonl", "--dry-run"]
    assert main(run) == 0
    written = (tmp_path / "out.jsonl").read_bytes()
    capsys.readouterr()
    assert main(run) == 0  # unchanged: every line stands
    assert "8 lines: 0 done, 8 reused, 0 failed" in capsys.readouterr().out
    lines[7]["prompt"] = "question SEVEN"
    write_requests(requests, lines)
    assert main(run) == 2
    err = capsys.readouterr().err
    assert "out.jsonl line 8 answers custom_id 'r0007' as it was asked before" in err
    assert main([*run, "--model", "another/model"]) == 2  # the lines name no model
    assert (tmp_path / "out.jsonl").read_bytes() == written  # nothing written or lost
    assert main([*run[:4], "again.jsonl", "--dry-run"]) == 0
    assert answer_of(read_results(tmp_path / "again.jsonl")[7]) == "[sim] question SEVEN"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "no id"}', "no custom_id"),
        ('{"custom_id": "a"}', "no messages"),
        ('{"custom_id": "a", "prompt": 3}', "prompt is not a string"),
        ('{"custom_id": "a", "messages": []}', "messages is not a non-empty list"),
        ('{"custom_id": "a", "messages": [{"role": "robot", "content": "x"}]}', "role"),
        ('{"custom_id": "a", "messages": [{"role": "user", "content": 5}]}', "content"),
        ('{"custom_id": "a", "messages": [{"role": "user", "content": "x", "name": "n"}]}', "name"),
        ('{"custom_id": "a", "url": "/v1/embeddings", "body": {"input": "x"}}', "url"),
        ('{"custom_id": "a", "prompt": "x", "stream": true}', "stream"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_lines_that_are_not_requests_say_why(line: str, problem: str) -> None:
    parsed = parse_request_line(line.encode(), 12)
    assert parsed.problem is not None and problem in parsed.problem


def test_a_second_run_writes_only_what_the_first_did_not_and_calls_nothing_twice(
    provider: ProviderSimulator, tmp_path: Path
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", prompts(30))
    out = tmp_path / "out.jsonl"
    assert main(["batch", "run", str(requests), "-o", str(out)]) == 0
    complete = out.read_bytes()
    lines = complete.splitlines(keepends=True)
    # As after a kill: 12 lines written, a 13th torn; the journal holds all 30 answers.
    out.write_bytes(b"".join(lines[:12]) + lines[12][:25])
    calls = provider.stats.requests
    assert main(["batch", "run", str(requests), "-o", str(out)]) == 0
    assert provider.stats.requests == calls  # the rest came from the journal
    results = read_results(out)
    assert [r["custom_id"] for r in results] == [f"r{i:04d}" for i in range(30)]
    assert [answer_of(r) for r in results] == [f"[sim] question {i}" for i in range(30)]


def test_results_of_other_requests_are_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", prompts(5))
    out = tmp_path / "out.jsonl"
    assert main(["batch", "run", str(requests), "-o", str(out), "--dry-run"]) == 0
    before = out.read_bytes()
    checkpoints = sorted((tmp_path / "checkpoints").iterdir())
    changed = prompts(5)
    changed[2]["custom_id"] = "other"
    write_requests(requests, changed)
    assert main(["batch", "run", str(requests), "-o", str(out), "--dry-run"]) == 2
    assert "line 3 answers custom_id 'r0002'" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert sorted((tmp_path / "checkpoints").iterdir()) == checkpoints  # nothing started


def test_a_file_that_is_not_a_results_file_is_refused(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", prompts(2))
    (tmp_path / "notes.txt").write_text("my notes\n")
    assert main(["batch", "run", str(requests), "-o", "notes.txt", "--dry-run"]) == 2
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"
    assert main(["batch", "run", str(requests), "-o", str(requests), "--dry-run"]) == 2


def test_a_real_run_does_not_continue_the_results_of_a_dry_run(
    provider: ProviderSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = write_requests(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"")
    assert main(["batch", "run", str(requests), "-o", str(out), "--dry-run"]) == 0
    out.write_bytes(out.read_bytes().splitlines(keepends=True)[0])
    assert main(["batch", "run", str(requests), "-o", str(out)]) == 2
    assert "dry run" in capsys.readouterr().err
    assert provider.stats.requests == 0


def test_a_repeated_custom_id_is_answered_at_each_place(tmp_path: Path) -> None:
    lines = [{"custom_id": "same", "prompt": f"p{i}"} for i in range(3)]
    requests = write_requests(tmp_path / "in.jsonl", lines)
    assert main(["batch", "run", str(requests), "-o", "out.jsonl", "--dry-run"]) == 0
    results = read_results(tmp_path / "out.jsonl")
    assert [(r["custom_id"], answer_of(r)) for r in results] == [
        ("same", "[sim] p0"),
        ("same", "[sim] p1"),
        ("same", "[sim] p2"),
    ]


def test_two_processes_cannot_write_one_results_file(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", prompts(2))
    with ResultsFile(tmp_path / "out.jsonl"):
        assert main(["batch", "run", str(requests), "-o", "out.jsonl", "--dry-run"]) == 2


def test_shards_are_disjoint_and_together_cover_the_input(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "in.jsonl", [*prompts(200), "garbage"])
    for i in range(2):
        args = ["-o", f"part{i}.jsonl", "--shard", f"{i}/2", "--dry-run"]
        assert main(["batch", "run", str(requests), *args]) in (0, 1)
    parts = [read_results(tmp_path / f"part{i}.jsonl") for i in range(2)]
    ids = [[r["custom_id"] for r in part] for part in parts]
    assert set(ids[0]).isdisjoint(ids[1])
    assert sorted(map(str, ids[0] + ids[1])) == sorted([*(f"r{i:04d}" for i in range(200)), "None"])
    assert all(60 < len(part) < 140 for part in parts)  # a hash split, roughly even
    for part in parts:  # each part in input order, each line its own answer
        answered = [r for r in part if r["error"] is None]
        assert [r["custom_id"] for r in answered] == sorted(r["custom_id"] for r in answered)
        assert all(answer_of(r) == f"[sim] question {int(r['custom_id'][1:])}" for r in answered)


def test_a_shard_is_chosen_by_custom_id_not_by_position(tmp_path: Path) -> None:
    forward = prompts(50)
    raw = [json.dumps(line).encode() for line in forward]
    lines = [parse_request_line(line, n) for n, line in enumerate(raw)]
    moved = [parse_request_line(line, 99 - n) for n, line in enumerate(raw)]
    shard = Shard.parse("1/3")
    assert [shard.holds(line) for line in lines] == [shard.holds(line) for line in moved]
    with pytest.raises(ValueError):
        Shard.parse("2/2")


def test_batch_api_answers_every_line_in_order_at_the_batch_price(
    provider: ProviderSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    provider.batch_api.simulation = BatchSimulation(processing_seconds=0.1, failure_rate=0.2)
    requests = write_requests(tmp_path / "in.jsonl", [*prompts(30), "nope"])
    args = ["-o", "out.jsonl", "--batch-api", "--poll-interval", "0.05"]
    assert main(["batch", "run", str(requests), *args]) == 1  # the line that is no request
    results = read_results(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in results] == [*(f"r{i:04d}" for i in range(30)), None]
    assert [answer_of(r) for r in results[:30]] == [f"[sim] question {i}" for i in range(30)]
    assert "at the batch price" in capsys.readouterr().out
    assert provider.stats.requests == 0  # nothing was called one by one


def test_interrupted_batch_api_run_says_how_to_resume_and_cancel_stops_its_batches(
    provider: ProviderSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    provider.batch_api.simulation = BatchSimulation(processing_seconds=30)
    stats = provider.batch_api.stats
    requests = write_requests(tmp_path / "in.jsonl", prompts(10))
    command = ["batch", "run", str(requests), "-o", "out.jsonl", "--batch-api"]
    watcher = interrupt_when(lambda: stats.retrievals >= 1)
    assert main(command) == 130
    watcher.join()
    assert "resume with: aita" in capsys.readouterr().err
    assert main(["batch", "cancel", "-o", "out.jsonl"]) == 0
    assert "cancelled 1 batch(es)" in capsys.readouterr().out
    assert stats.cancels == 1
