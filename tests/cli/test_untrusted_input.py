"""Untrusted input stays in its place: an assignment folder from someone else, a ``.env`` in the
working directory, a broken or hostile provider, a request to the simulator.

A provider stand-in (the simulator with a responder) records every request it answers; where a
file must not be read, its content must never appear in any of them, and the command must end
with exit 2 and one line naming the file, before any call.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aita.cli import main
from aita.config import get_config
from aita.engine import (
    CheckpointManager,
    LLMMessage,
    ParallelLLMExecutor,
    ProviderUnavailable,
    ProviderUnreachable,
    ResponseTooLarge,
    SimpleLLMTask,
    create_openrouter_client,
)
from aita.errors import EmptyResponse, InvalidResponse, ModelNotFound
from aita.pipelines.dry_run import dry_run_responder
from aita.pipelines.tasks import pipeline_task_id
from aita.simulator import ProviderSimulator
from tests.support.doubles import SimulatorFactory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "midterm"
#: A key shaped like OpenRouter's: a common prefix, then 64 characters of secret.
KEY = "sk-or-v1-" + "3f9c2a7be1d04c58a6f2e9b7d3c1a0f48e5b6c7d9a2f1e0b3c4d5e6f7a8b9c0d"
SECRET = "TOP-SECRET-c0ffee-4242"
HELLO = [LLMMessage(role="user", content="hello")]


def leaks(text: str, secret: str = KEY, run: int = 12) -> bool:
    """Whether ``text`` holds any ``run`` consecutive characters of ``secret``."""
    return any(secret[i : i + run] in text for i in range(len(secret) - run + 1))


@dataclass
class Provider:
    """The simulator standing in for a real provider, with every request body it answered."""

    sim: ProviderSimulator
    bodies: list[str] = field(default_factory=list)

    def saw(self, text: str) -> bool:
        return any(text in body for body in self.bodies)


@pytest.fixture
def provider(simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch) -> Provider:
    bodies: list[str] = []

    def respond(request: dict[str, Any]) -> str | None:
        bodies.append(orjson.dumps(request).decode())
        return dry_run_responder(request)

    sim = simulator(announce=False, responder=respond)
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MODEL", "sim/unpriced")
    get_config.cache_clear()
    return Provider(sim, bodies)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    return tmp_path / "data"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the data dir: what the links below lead to."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def aita(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command in its own process (what must not block is run with a time limit)."""
    return subprocess.run(
        [sys.executable, "-m", "aita", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def assert_refused(code: int, err: str, *names: str) -> None:
    """Exit 2 with one line on stderr naming the file."""
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("aita: "), err
    for name in names:
        assert name in err


def common(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--assignment", "midterm", "--yes"]


# -- files of the assignment -----------------------------------------------------------------

SPEC = [
    {"question_id": qid, "question_text": f"{SECRET} {qid}", "points": 2, "page_number": 1}
    for qid in ("1", "6", "9")  # the ids question_instructions.json and user_rubrics.json name
]
LINKED_FILES = {
    "instructions.txt": SECRET,
    "question_instructions.json": json.dumps({"6": SECRET}),
    "user_rubrics.json": json.dumps({"1": {"criteria": [{"description": SECRET, "points": 2}]}}),
    "exam_spec.json": json.dumps({"exam_name": "x", "total_points": 6, "questions": SPEC}),
}


@pytest.mark.parametrize("name", sorted(LINKED_FILES))
def test_an_assignment_file_linked_outside_is_refused_before_any_call(
    name: str,
    data_dir: Path,
    outside: Path,
    provider: Provider,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = outside / "shadow"
    secret.write_text(LINKED_FILES[name])
    linked = data_dir / "midterm" / name
    linked.unlink()
    linked.symlink_to(secret)
    code, _, err = run(capsys, "generate-rubric", *common(data_dir))
    assert_refused(code, err, str(linked), "outside the assignment", "AITA_ALLOW_OUTSIDE_PATHS")
    assert provider.sim.stats.requests == 0 and not provider.saw(SECRET)
    assert not (data_dir / "midterm" / "results").exists()
    # The same content inside the folder is read and used: sent (an instructor's rubric is
    # kept as it is), so the stand-in does see what is sent.
    linked.unlink()
    shutil.copy(secret, linked)
    code, _, err = run(capsys, "generate-rubric", *common(data_dir))
    assert code == 0, err
    rubrics = data_dir / "midterm" / "results" / "rubrics.json"
    assert provider.saw(SECRET) or SECRET in rubrics.read_text()


def test_allow_outside_paths_lets_a_link_lead_elsewhere(
    data_dir: Path,
    outside: Path,
    provider: Provider,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (outside / "shared_instructions.txt").write_text(SECRET)
    linked = data_dir / "midterm" / "instructions.txt"
    linked.unlink()
    linked.symlink_to(outside / "shared_instructions.txt")
    monkeypatch.setenv("AITA_ALLOW_OUTSIDE_PATHS", "true")
    get_config.cache_clear()
    code, _, err = run(capsys, "generate-rubric", *common(data_dir))
    assert code == 0, err
    assert provider.saw(SECRET)


def sparse(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        handle.truncate(size)


@pytest.mark.parametrize(
    ("make", "allow_outside", "problem"),
    [
        (lambda path: os.mkfifo(path), False, "not a regular file"),
        (lambda path: path.symlink_to("/dev/zero"), True, "not a regular file"),
        (lambda path: path.symlink_to("/dev/zero"), False, "outside the assignment"),
        (lambda path: sparse(path, 11 * 1024 * 1024), False, "more than the limit of 10.0"),
        (lambda path: path.mkdir(), False, "a folder, not a file"),
    ],
    ids=["fifo", "device-allowed-outside", "device", "11-MB", "folder"],
)
def test_an_input_that_is_not_a_small_regular_file_is_refused_without_blocking(
    make: Callable[[Path], object],
    allow_outside: bool,
    problem: str,
    data_dir: Path,
) -> None:
    instructions = data_dir / "midterm" / "instructions.txt"
    instructions.unlink()
    make(instructions)
    env = {"AITA_ALLOW_OUTSIDE_PATHS": "true"} if allow_outside else {}
    done = aita("generate-rubric", *common(data_dir), "--dry-run", cwd=data_dir.parent, env=env)
    assert_refused(done.returncode, done.stderr, str(instructions), problem)
    assert not (data_dir / "midterm" / "results").exists()


def test_a_student_folder_linked_outside_is_refused_before_any_call(
    data_dir: Path,
    outside: Path,
    provider: Provider,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(data_dir / "midterm" / "submissions" / "alice", outside / "private")
    mallory = data_dir / "midterm" / "submissions" / "mallory"
    mallory.symlink_to(outside / "private")
    code, _, err = run(capsys, "transcribe", *common(data_dir))
    assert_refused(code, err, str(mallory), "outside the assignment")
    assert provider.sim.stats.requests == 0
    code, _, err = run(capsys, "transcribe", *common(data_dir), "--student", "bob")
    assert_refused(code, err, str(mallory))  # the folder is refused as a whole
    assert provider.sim.stats.requests == 0


def test_a_student_folder_linked_inside_the_assignment_is_read(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assignment = data_dir / "midterm"
    (assignment / "submissions" / "alice").rename(assignment / "scans_alice")
    (assignment / "submissions" / "alice").symlink_to(assignment / "scans_alice")
    code, out, err = run(capsys, "transcribe", *common(data_dir), "--dry-run")
    assert code == 0, err
    assert "12/12 pages transcribed for 3 student(s)" in out


@pytest.mark.parametrize(
    "linked", ["results", "results/dry-run", "results/dry-run/grades", "results/answer_keys.json"]
)
def test_results_leading_outside_are_refused_and_nothing_is_written_there(
    linked: str,
    data_dir: Path,
    outside: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = data_dir / "midterm" / linked
    path.parent.mkdir(parents=True, exist_ok=True)
    target = outside / "target"
    if linked.endswith(".json"):
        target.write_text("{}")
    else:
        target.mkdir()
    path.symlink_to(target)
    for command in ("generate-rubric", "transcribe", "grade", "report"):
        code, _, err = run(capsys, command, *common(data_dir)[:4], "--dry-run")
        assert_refused(code, err, str(path), "outside the assignment")
    assert [p.name for p in outside.rglob("*")] == ["target"]
    if target.is_file():
        assert target.read_text() == "{}"


def test_a_fifo_among_the_results_is_refused_without_blocking(data_dir: Path) -> None:
    results = data_dir / "midterm" / "results" / "dry-run"
    results.mkdir(parents=True)
    os.mkfifo(results / "rubrics.json")
    done = aita("generate-rubric", *common(data_dir), "--dry-run", cwd=data_dir.parent)
    assert_refused(done.returncode, done.stderr, str(results / "rubrics.json"), "not a regular")


def test_an_assignment_linked_into_the_data_dir_from_elsewhere_is_refused(
    data_dir: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data_dir / "midterm").rename(outside / "midterm")
    (data_dir / "midterm").symlink_to(outside / "midterm")
    code, _, err = run(capsys, "generate-rubric", *common(data_dir), "--dry-run")
    assert_refused(code, err, str(data_dir / "midterm"), "outside the data dir")
    # Named as a path, the folder is the user's own choice.
    code, _, err = run(
        capsys, "generate-rubric", "--assignment", str(outside / "midterm"), "--dry-run", "--yes"
    )
    assert code == 0, err


# -- task ids ----------------------------------------------------------------------------------


def test_students_and_questions_whose_names_run_together_are_all_graded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assignment = tmp_path / "data" / "quiz"
    questions = [
        {"question_id": qid, "question_text": f"q {qid}", "points": 2, "page_number": 1}
        for qid in ("1", "1_1")
    ]
    assignment.mkdir(parents=True)
    (assignment / "exam_spec.json").write_text(
        json.dumps({"exam_name": "quiz", "total_points": 4, "questions": questions})
    )
    for student in ("a", "a_1"):
        (assignment / "submissions" / student).mkdir(parents=True)
        shutil.copy(
            EXAMPLE / "submissions" / "alice" / "page_001.png", assignment / "submissions" / student
        )
    args = ["--data-dir", str(tmp_path / "data"), "--assignment", "quiz", "--dry-run"]
    for command in ("generate-rubric", "transcribe", "grade"):
        code, _, err = run(capsys, command, *args)
        assert code == 0, err
    grades = assignment / "results" / "dry-run" / "grades"
    for student in ("a", "a_1"):
        assert set(json.loads((grades / f"{student}.json").read_text())) == {"1", "1_1"}


names = st.text(min_size=1, max_size=6, alphabet="a1_/%F2")


@given(names, names, names, names)
def test_pipeline_task_ids_never_collide(s1: str, q1: str, s2: str, q2: str) -> None:
    if (s1, q1) != (s2, q2):
        assert pipeline_task_id("grade", s1, q1) != pipeline_task_id("grade", s2, q2)


def test_usual_task_ids_stay_readable() -> None:
    assert pipeline_task_id("grade", "alice", "1a") == "grade/alice/1a"
    assert pipeline_task_id("transcribe", "bob", "page_003") == "transcribe/bob/page_003"
    assert pipeline_task_id("grade", "a/b", "1%") == "grade/a%2Fb/1%25"


# -- a .env in the working directory -----------------------------------------------------------


def test_a_base_url_from_a_dotenv_file_is_named_before_the_key_is_sent(
    data_dir: Path, simulator: SimulatorFactory
) -> None:
    sim = simulator(announce=False, responder=dry_run_responder)
    password = "hunter2-in-the-url"
    url = sim.base_url.replace("http://", f"http://mallory:{password}@")
    (data_dir.parent / ".env").write_text(f"AITA_BASE_URL={url}\nAITA_MODEL=sim/unpriced\n")
    env = {"OPENROUTER_API_KEY": KEY}
    done = aita("generate-rubric", *common(data_dir), cwd=data_dir.parent, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    warning = next(i for i, line in enumerate(lines) if "AITA_BASE_URL comes from" in line)
    spend_check = next(i for i, line in enumerate(lines) if line.startswith("about to make"))
    assert warning < spend_check
    assert str(data_dir.parent / ".env") in lines[warning]
    assert f"127.0.0.1:{sim.port}" in lines[warning] and "at 127.0.0.1" in lines[spend_check]
    assert password not in done.stderr + done.stdout
    assert not leaks(done.stderr + done.stdout)


@pytest.mark.parametrize(
    ("dotenv", "environment", "named"),
    [
        ("AITA_BASE_URL=http://evil.invalid/v1\n", None, True),
        ("aita_base_url=http://evil.invalid/v1\n", None, True),
        ("AITA_BASE_URL=https://openrouter.ai/api/v1\n", None, False),
        ("AITA_BASE_URL=http://evil.invalid/v1\n", "http://127.0.0.1:8000/v1", False),
        ("AITA_MODEL=x\n", None, False),
    ],
    ids=["from-dotenv", "lower-case", "the-default", "environment-wins", "no-base-url"],
)
def test_only_a_base_url_that_the_dotenv_file_alone_set_is_named(
    dotenv: str,
    environment: str | None,
    named: bool,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (isolated_env / ".env").write_text(dotenv)
    if environment:
        monkeypatch.setenv("AITA_BASE_URL", environment)
    get_config.cache_clear()
    expected = isolated_env / ".env" if named else None
    assert get_config().llm.base_url_from == expected
    create_openrouter_client(api_key=KEY)
    warned = [
        r.getMessage() for r in caplog.records if "AITA_BASE_URL comes from" in r.getMessage()
    ]
    assert warned == (
        [
            f"AITA_BASE_URL comes from {expected}, not from your environment: requests "
            "and the API key go to http://evil.invalid/v1 instead of openrouter.ai; "
            "remove it from that file unless you put it there"
        ]
        if named
        else []
    )


# -- provider answers ---------------------------------------------------------------------------

MEASURE = """
import json, resource, sys
from aita.engine import LLMMessage, create_openrouter_client
small, big = sys.argv[1], sys.argv[2]
hello = [LLMMessage(role="user", content="hello")]
create_openrouter_client(api_key="sk-local-test", base_url=small).complete(hello)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    create_openrouter_client(api_key="sk-local-test", base_url=big, timeout=60).complete(hello)
    outcome = "accepted"
except Exception as error:
    outcome = f"{type(error).__name__}: {error}"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "growth_mb": (after - before) / 1024}))
"""
ANSWER_BYTES = 100 * 1024 * 1024


@pytest.mark.parametrize(
    "how",
    [{"announce_length": True}, {"announce_length": False}, {"compress": True}],
    ids=["announced", "chunked", "gzip"],
)
def test_a_100_mb_answer_is_refused_without_being_held_in_memory(
    how: dict[str, bool], simulator: SimulatorFactory, tmp_path: Path
) -> None:
    small = simulator()
    big = simulator(answer_bytes=ANSWER_BYTES, **how)
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, small.base_url, big.base_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["outcome"].startswith("ResponseTooLarge: response too large: an answer")
    assert "AITA_MAX_ANSWER_BYTES" in measured["outcome"]
    # The client's peak memory grows by a few MB (the limit is 4 MB), not by the answer's 100.
    assert measured["growth_mb"] < 40, measured


def test_the_answer_limit_is_a_setting_and_gzipped_answers_within_it_are_read(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator(compress=True, answer_bytes=200_000)
    assert create_openrouter_client(api_key=KEY, base_url=sim.base_url).complete(HELLO).content
    monkeypatch.setenv("AITA_MAX_ANSWER_BYTES", "100000")
    get_config.cache_clear()
    with pytest.raises(ResponseTooLarge, match="more than the limit of 100,000 bytes"):
        create_openrouter_client(api_key=KEY, base_url=sim.base_url).complete(HELLO)


@pytest.mark.parametrize(
    ("body", "error_type", "says"),
    [
        (b"[1, 2]", InvalidResponse, "not a JSON object"),
        (b'{"choices": "abc"}', InvalidResponse, "no message in its first choice"),
        (b'{"choices": [{"message": "hi"}]}', InvalidResponse, "no message in its first choice"),
        (b'{"choices": [{"message": {"content": 5}}]}', EmptyResponse, "empty completion"),
        (b'{"error": {"message": "upstream\\nfailed"}}', InvalidResponse, "upstream failed"),
    ],
    ids=["array", "choices-text", "message-text", "content-number", "error-in-a-200"],
)
def test_a_body_that_is_not_a_completion_is_an_invalid_response(
    body: bytes, error_type: type[Exception], says: str, simulator: SimulatorFactory
) -> None:
    sim = simulator(body=body)
    with pytest.raises(error_type, match=says) as caught:
        create_openrouter_client(api_key=KEY, base_url=sim.base_url).complete(HELLO)
    assert isinstance(caught.value, InvalidResponse)  # retried, like any broken answer


@pytest.mark.parametrize(
    "usage",
    [
        {"cost": "abc"},
        {"cost": -1e9},
        {"cost": float("nan")},
        {"prompt_tokens": -5, "completion_tokens": "many", "cost": -1},
    ],
    ids=["text", "minus-a-billion", "nan", "negative-counts"],
)
def test_a_usage_that_is_not_a_price_keeps_the_answer_and_is_not_spend(
    usage: dict[str, Any],
    simulator: SimulatorFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = simulator(announce=False, usage=usage)  # a real provider's answers: they are spend
    client = create_openrouter_client(api_key=KEY, base_url=sim.base_url, model="sim/unpriced")
    executor = ParallelLLMExecutor(client, max_workers=2, rate_limit=None)
    batch = executor.execute_batch(
        [SimpleLLMTask(f"q{i}", f"question {i}") for i in range(3)], checkpoint_name="usage"
    )
    assert [r.result for r in batch.task_results] == [f"[sim] question {i}" for i in range(3)]
    assert all(not r.cost and r.tokens >= 0 for r in batch.task_results)  # no price, no credit
    code, out, _ = run(capsys, "costs")
    assert code == 0
    assert "total: price unknown (3 calls;" in out
    assert "-" not in out.split("total:")[1] and "1000000000" not in out


@pytest.mark.parametrize(
    "echo",
    [
        f"your key is {KEY}",
        f"your key is {KEY[:30]}{KEY[31:]}",  # one character dropped
        f'{{"text": "{KEY[:20]} {KEY[20:40]} {KEY[40:]}"}}',  # in pieces of 20
        f"\x1b[31m{KEY}\x1b[0m",
    ],
    ids=["whole", "one-character-missing", "pieces", "in-escapes"],
)
def test_a_key_echoed_in_an_answer_is_never_kept_or_shown(
    echo: str, simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = simulator(responder=lambda request: echo)
    client = create_openrouter_client(api_key=KEY, base_url=sim.base_url)
    assert not leaks(client.complete(HELLO).content)

    def refuse(text: str) -> str:
        raise ValueError(f"not what was asked: {text}")

    executor = ParallelLLMExecutor(
        client, max_workers=1, rate_limit=None, max_retries=1, checkpoint_dir=tmp_path / "cp"
    )
    batch = executor.execute_batch(
        [SimpleLLMTask("t", "hello", parse_fn=refuse)], checkpoint_name="echo"
    )
    failed = batch.task_results[0]
    assert not failed.success and failed.raw_response and "[redacted]" in failed.raw_response
    journal = "".join(p.read_text() for p in (tmp_path / "cp").iterdir())
    assert "[redacted]" in journal
    for text in (failed.raw_response, str(failed.error), journal):
        assert not leaks(text)
    assert CheckpointManager(tmp_path / "cp").find_latest_checkpoint("echo") is not None


def test_provider_error_text_becomes_one_bounded_line_without_the_key(
    simulator: SimulatorFactory,
) -> None:
    hostile = f"\x1b[2J\x1b]0;owned\x07line one\r\nline two {KEY[1:]}\n" + "x" * 5000

    def fail(request: dict[str, Any]) -> str:
        raise RuntimeError(hostile)

    sim = simulator(responder=fail)
    with pytest.raises(ProviderUnavailable) as caught:
        create_openrouter_client(api_key=KEY, base_url=sim.base_url).complete(HELLO)
    message = caught.value.message
    assert "line one line two [redacted]" in message
    assert len(message) <= 500 and message.endswith("…")
    assert not any(ord(c) < 32 or c == "\x7f" for c in str(caught.value))
    assert not leaks(str(caught.value))


def test_credentials_in_the_base_url_are_never_shown(simulator: SimulatorFactory) -> None:
    sim = simulator()
    password = "hunter2-in-the-url"
    no_v1 = f"http://mallory:{password}@127.0.0.1:{sim.port}"
    client = create_openrouter_client(api_key=KEY, base_url=no_v1)
    assert client.base_url == f"http://127.0.0.1:{sim.port}"
    assert password not in repr(client) and "mallory" not in repr(client)
    with pytest.raises(ModelNotFound) as not_found:  # the hint names the base URL
        client.complete(HELLO)
    assert f"http://127.0.0.1:{sim.port}/v1" in str(not_found.value)
    down = create_openrouter_client(
        api_key=KEY, base_url=f"http://mallory:{password}@127.0.0.1:9/v1", timeout=2
    )
    with pytest.raises(ProviderUnreachable) as unreachable:
        down.complete(HELLO)
    for text in (str(not_found.value), str(unreachable.value), repr(down)):
        assert password not in text and "mallory" not in text


# -- the simulator ------------------------------------------------------------------------------


def raw_request(sim: ProviderSimulator, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", sim.port), timeout=timeout) as conn:
        conn.sendall(data)
        return conn.recv(4096)


def test_the_simulator_refuses_a_body_over_its_limit_without_reading_it(
    simulator: SimulatorFactory,
) -> None:
    sim = simulator()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    assert raw_request(sim, head % (10**9)).startswith(b"HTTP/1.1 413")
    assert raw_request(sim, head.replace(b"%d", b"-5")).startswith(b"HTTP/1.1 400")
    assert sim.stats.by_status[413] == 1


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "minItems": 30_000_000, "items": {"type": "string"}},
        {"type": "string", "minLength": 30_000_000},
        {
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "children": {
                            "type": "array",
                            "minItems": 50,
                            "items": {"$ref": "#/$defs/Node"},
                        }
                    },
                }
            },
            "$ref": "#/$defs/Node",
        },
    ],
    ids=["30-million-items", "30-million-characters", "recursive"],
)
def test_what_a_schema_asks_the_simulator_to_build_is_bounded(
    schema: dict[str, Any], simulator: SimulatorFactory
) -> None:
    sim = simulator()
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    client = create_openrouter_client(api_key=KEY, base_url=sim.base_url)
    answer = client.complete(HELLO, response_format=response_format)
    assert len(answer.content) < 2 * 1024 * 1024
    json.loads(answer.content)


def test_the_simulator_closes_idle_connections(simulator: SimulatorFactory) -> None:
    sim = simulator(idle_timeout=0.2)
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as conn:
        assert conn.recv(1) == b""  # closed by the server, long before the client gives up
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    with socket.create_connection(("127.0.0.1", sim.port), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):  # a kept-alive connection, then closed when idle
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and b"[sim] hi" in received


def test_a_fifo_among_the_checkpoints_is_passed_over_not_waited_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from aita.cli import main as cli_main

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    os.mkfifo(folder / "job_20250101_000000.checkpoint.json")
    assert cli_main(["checkpoints", "list", "--checkpoint-dir", str(folder)]) == 0
    assert "no checkpoints" in capsys.readouterr().out


def test_a_journal_line_too_long_for_any_record_is_skipped_unread(tmp_path: Path) -> None:
    from aita.engine import Checkpoint, CheckpointManager, TaskRecord

    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="job")
    checkpoint.records["t0"] = TaskRecord("t0", succeeded=True, raw_response="ok")
    path = manager.save(checkpoint)
    with open(path, "ab") as handle:
        handle.write(b'{"task_id": "big", "raw": "' + b"x" * (64 * 1024 * 1024 + 10) + b'"}\n')
        handle.write(b'{"task_id":"t1","ok":true,"raw":"fine"}\n')
    loaded = manager.load(path)
    assert set(loaded.records) == {"t0", "t1"}


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_vision_task_refuses_an_image_that_is_no_regular_file(
    tmp_path: Path, special: str
) -> None:
    import os

    from aita.engine import image_to_data_url

    path = Path(special)
    if special == "fifo":
        path = tmp_path / "scan.png"
        os.mkfifo(path)
    with pytest.raises(Exception, match="not a regular file"):
        image_to_data_url(path)
