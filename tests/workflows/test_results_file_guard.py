"""``aita batch run -o FILE`` never destroys a file that is not its own results: an existing
``-o`` file must hold result lines before a byte of it is touched, and only a regular file is
written (a FIFO would block, a device would swallow the answers)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from aita.cli import main
from aita.config import get_config
from aita.workflows.batchfile import parse_request_line
from tests.workflows.test_batch_run import prompts, read_results, write_requests


def run(requests: Path, out: Path | str) -> int:
    return main(["batch", "run", str(requests), "-o", str(out), "--dry-run"])


@pytest.mark.parametrize(
    "content",
    [
        b'{"theme": "dark", "font": 12}',  # one JSON object, no newline at the end
        b'{\n  "theme": "dark"\n}\n',  # pretty-printed JSON
        b'{"custom_id": "x"}\n{"theme": "dark"}',  # a line that is no result after one that is
    ],
)
def test_an_output_file_that_holds_no_result_lines_is_refused_untouched(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = write_requests(tmp_path / "req.jsonl", prompts(3))
    settings = tmp_path / "settings.json"
    settings.write_bytes(content)
    assert run(requests, settings) == 2
    assert settings.read_bytes() == content
    assert "is not a result line" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()  # nothing started


def test_a_requests_file_given_as_the_output_keeps_its_last_line(tmp_path: Path) -> None:
    """Swapped arguments: the requests file (last line without its newline) is the ``-o``."""
    requests = tmp_path / "req.jsonl"
    requests.write_bytes(b"\n".join(json.dumps(p).encode() for p in prompts(3)))
    other = write_requests(tmp_path / "other.jsonl", prompts(2))
    before = requests.read_bytes()
    assert run(other, requests) == 2
    assert requests.read_bytes() == before
    link = tmp_path / "link.jsonl"
    link.symlink_to(requests)
    assert run(other, link) == 2
    assert requests.read_bytes() == before


def test_the_same_file_under_another_name_is_not_written_over(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "req.jsonl", prompts(3))
    os.link(requests, tmp_path / "hard.jsonl")
    before = requests.read_bytes()
    assert run(requests, tmp_path / "hard.jsonl") == 2
    assert requests.read_bytes() == before


def test_a_torn_last_result_line_is_cut_and_answered_again(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "req.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    assert run(requests, out) == 0
    whole = out.read_bytes()
    lines = whole.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][:30])  # a crash in the middle of a write
    assert run(requests, out) == 0
    assert [r["custom_id"] for r in read_results(out)] == ["r0000", "r0001", "r0002"]


@pytest.mark.timeout(20)
def test_a_fifo_or_a_device_as_the_output_is_refused_without_blocking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = write_requests(tmp_path / "req.jsonl", prompts(2))
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    assert run(requests, fifo) == 2
    assert run(requests, "/dev/null") == 2
    err = capsys.readouterr().err
    assert err.count("not a regular file") == 2
    assert "internal error" not in err


def test_results_are_written_for_their_owner_only(tmp_path: Path) -> None:
    requests = write_requests(tmp_path / "req.jsonl", prompts(2))
    assert run(requests, tmp_path / "new" / "out.jsonl") == 0
    assert stat.S_IMODE((tmp_path / "new" / "out.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_an_escape_sequence_in_a_request_line_never_reaches_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "\x1b]0;PWNED\x07\x1b[2J\u202e"
    lines = [
        {"custom_id": "a", "messages": [{"role": "user", "content": "x", hostile: 1}]},
        {"custom_id": "b", "messages": [{"role": hostile, "content": "x"}]},
        {"custom_id": hostile, "prompt": "x", "url": "/v1/" + hostile},
    ]
    requests = write_requests(tmp_path / "req.jsonl", lines)
    assert run(requests, tmp_path / "out.jsonl") == 1
    out, err = capsys.readouterr()
    assert "line 1" in err and "line 2" in err and "line 3" in err
    assert not any(c in out + err for c in "\x1b\x07\u202e")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"custom_id": "a", "prompt": "x", "url": "/v1/embeddings"}', "url '/v1/embeddings'"),
        ('{"custom_id": "a", "messages": [], "url": "/v1/responses"}', "url '/v1/responses'"),
        ('{"custom_id": "a", "prompt": "x", "method": "GET"}', "method 'GET'"),
    ],
)
def test_a_flat_line_naming_another_endpoint_is_refused_not_answered(
    line: str, problem: str
) -> None:
    parsed = parse_request_line(line.encode(), 3)
    assert parsed.problem is not None and problem in parsed.problem


def test_a_flat_line_naming_the_chat_endpoint_is_answered() -> None:
    line = '{"custom_id": "a", "prompt": "x", "url": "/v1/chat/completions", "method": "POST"}'
    parsed = parse_request_line(line.encode(), 1)
    assert parsed.problem is None and "url" not in parsed.params


def test_an_output_file_of_one_huge_line_is_refused_without_reading_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aita.workflows.batchfile.MAX_RESULT_LINE", 1000)
    monkeypatch.setenv("AITA_MAX_ANSWER_BYTES", "1024")
    get_config.cache_clear()
    requests = write_requests(tmp_path / "req.jsonl", prompts(2))
    video = tmp_path / "video.mp4"
    video.write_bytes(b'{"id":"batch_req_' + b"x" * 20_000)  # starts like one, never ends
    assert run(requests, video) == 2
    assert video.stat().st_size == 20_017
