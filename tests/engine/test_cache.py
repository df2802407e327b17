"""The response cache: answers by request key in one SQLite file, shared by threads and processes;
and ``aita cache stats|clear``."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aita.cli import main
from aita.engine import (
    ConfigError,
    LLMMessage,
    LLMResponse,
    ResponseCache,
    SimpleLLMTask,
    Usage,
    request_key,
)
from tests.support.doubles import SimulatorFactory, client_for, executor_for

ROOT = Path(__file__).resolve().parents[2]


def answer(text: str, **kwargs: object) -> LLMResponse:
    return LLMResponse(
        content=text,
        usage=Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17, cost=0.0001),
        model="sim/model",
        finish_reason="stop",
        **kwargs,  # type: ignore[arg-type]
    )


def key_of(prompt: str, **params: object) -> str:
    return request_key("sim/model", [LLMMessage("user", prompt)], params)


def test_a_stored_answer_comes_back_whole_but_never_its_headers(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "cache.sqlite3") as cache:
        cache.put(key_of("q"), answer("a", headers={"x-request-id": "r1", "set-cookie": "s"}))
        found = cache.get(key_of("q"))
    assert found is not None
    assert (found.content, found.model, found.finish_reason) == ("a", "sim/model", "stop")
    assert found.usage == Usage(12, 5, 17, 0.0001)
    assert found.headers == {}
    assert b"set-cookie" not in (tmp_path / "cache.sqlite3").read_bytes()


def test_a_different_request_is_a_miss(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "cache.sqlite3") as cache:
        cache.put(key_of("q", temperature=0), answer("a"))
        assert cache.get(key_of("q", temperature=1)) is None
        assert cache.get(key_of("other", temperature=0)) is None
        assert cache.get(key_of("q", temperature=0)) is not None


def test_a_later_answer_replaces_the_earlier_one(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "cache.sqlite3") as cache:
        cache.put("k", answer("old"))
        cache.put("k", answer("new"))
        found = cache.get("k")
        assert found is not None and found.content == "new"
        assert cache.stats()["entries"] == 1


def test_stats_count_entries_bytes_hits_and_misses_and_clear_empties_it(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    with ResponseCache(path) as cache:
        for i in range(50):
            cache.put(f"k{i}", answer("x" * 1000))
        cache.get("k1")
        cache.get("absent")
        full = cache.stats()
        assert (full["entries"], full["hits"], full["misses"]) == (50, 1, 1)
        assert full["bytes"] > 50 * 1000
        assert cache.clear() == 50
        empty = cache.stats()
    assert (empty["entries"], empty["hits"], empty["misses"]) == (0, 0, 0)
    assert empty["bytes"] < full["bytes"]
    with ResponseCache(path) as reopened:  # counters live in the file, for every process
        reopened.get("k1")
        assert reopened.stats()["misses"] == 1


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    wrong: list[str] = []

    def work(n: int) -> None:
        for i in range(100):
            cache.put(f"{n}-{i}", answer(f"{n}-{i}"))
            found = cache.get(f"{n}-{i}")
            if found is None or found.content != f"{n}-{i}":
                wrong.append(f"{n}-{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert cache.stats()["entries"] == 800
    cache.close()


def test_connections_creating_one_cache_at_the_same_instant_all_succeed(tmp_path: Path) -> None:
    """The switch to WAL on a new file is where simultaneous openers collide."""
    errors: list[Exception] = []

    def open_and_write(path: Path, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            with ResponseCache(path) as cache:
                cache.put("k", answer("a"))
        except Exception as error:
            errors.append(error)

    for attempt in range(30):
        barrier = threading.Barrier(8)
        path = tmp_path / f"new{attempt}.sqlite3"
        threads = [threading.Thread(target=open_and_write, args=(path, barrier)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


FILLER = """
import sys
from aita.engine import LLMResponse, ResponseCache
cache = ResponseCache(sys.argv[1])
name = sys.argv[2]
for i in range(400):
    cache.put(f"shared-{i}", LLMResponse(content=f"shared {i}"))
    cache.put(f"{name}-{i}", LLMResponse(content=f"{name} {i}"))
    found = cache.get(f"shared-{i // 2}")
    assert found is not None and found.content == f"shared {i // 2}", found
"""


def test_two_processes_filling_one_cache_at_once_corrupt_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"  # created by the processes themselves, at the same time
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fillers = [
        subprocess.Popen(
            [sys.executable, "-c", FILLER, str(path), name], env=env, stderr=subprocess.PIPE
        )
        for name in ("a", "b")
    ]
    for filler in fillers:
        _, stderr = filler.communicate(timeout=120)
        assert filler.returncode == 0, stderr.decode()[-2000:]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ResponseCache(path) as cache:
        assert cache.stats()["entries"] == 400 * 3
        for name in ("shared", "a", "b"):
            found = cache.get(f"{name}-399")
            assert found is not None and found.content == f"{name} 399"


def test_a_file_that_is_not_a_cache_is_a_config_error_naming_it(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database, just words " * 100)
    with pytest.raises(ConfigError, match=r"notes\.txt"):
        ResponseCache(text)
    other = tmp_path / "theirs.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
    with pytest.raises(ConfigError, match="not a response cache"):
        ResponseCache(other)
    with sqlite3.connect(other) as db:  # left as it was
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
    assert tables == ["accounts"]


def test_a_failing_cache_counts_as_a_miss_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    cache.put("k", answer("a"))
    cache.close()
    with caplog.at_level(logging.WARNING, logger="aita"):
        assert cache.get("k") is None
        cache.put("k", answer("b"))
    assert len(caplog.records) == 1 and "cache.sqlite3" in caplog.records[0].getMessage()


# -- aita cache stats|clear -----------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache with two answers, one hit and one miss, where ``AITA_CACHE_PATH`` points."""
    path = tmp_path / "cache" / "responses.sqlite3"
    monkeypatch.setenv("AITA_CACHE_PATH", str(path))
    with ResponseCache(path) as cache:
        cache.put("k1", answer("a"))
        cache.put("k2", answer("b"))
        cache.get("k1")
        cache.get("k3")
    return path


def test_cli_stats_shows_entries_size_hits_and_misses(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "cache", "stats")
    assert code == 0
    assert f"{filled}: 2 cached response(s)" in out and "1 hits / 1 misses" in out


def test_cli_stats_of_a_missing_cache_says_so_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "none" / "responses.sqlite3"
    code, out, _ = run(capsys, "cache", "stats", "--cache-path", str(path))
    assert code == 0 and "no response cache at" in out
    assert not path.parent.exists()


def test_cli_clear_with_yes_empties_the_cache(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "cache", "clear", "--yes")
    assert code == 0 and "deleted 2 cached response(s)" in out
    with ResponseCache(filled) as cache:
        assert cache.stats()["entries"] == 0


def test_cli_clear_without_yes_deletes_nothing_when_nobody_can_answer(
    filled: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal
    code, out, _ = run(capsys, "cache", "clear")
    assert code == 0 and "nothing deleted" in out
    with ResponseCache(filled) as cache:
        assert cache.stats()["entries"] == 2


def test_cli_bad_cache_file_is_exit_2_with_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "garbage.sqlite3"
    bad.write_bytes(b"\x00garbage" * 200)
    code, out, err = run(capsys, "cache", "stats", "--cache-path", str(bad))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("aita: response cache") and "garbage" in err


def test_cli_unknown_action_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["cache", "purge"])
    assert exited.value.code == 2


def test_a_batch_asking_what_another_batch_asked_makes_no_call_with_the_cache_on(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = simulator(announce=False)  # a real provider: simulated answers are never cached
    tasks = [SimpleLLMTask(f"t{i}", f"prompt {i}") for i in range(10)]
    cache = tmp_path / "cache.sqlite3"
    executor_for(client_for(sim), cache=cache).execute_batch(tasks, checkpoint_name="first")
    assert sim.stats.requests == 10
    again = executor_for(client_for(sim), cache=cache).execute_batch(
        [SimpleLLMTask(f"other{i}", f"prompt {i}") for i in range(10)], checkpoint_name="second"
    )
    assert sim.stats.requests == 10  # every answer came from the cache
    assert [r.result for r in again.task_results] == [f"[sim] prompt {i}" for i in range(10)]
    assert all(r.cached and r.cost == 0 for r in again.task_results)
    assert again.metrics.cached_tasks == 10 and again.metrics.requests == 0
    executor_for(client_for(sim), cache=False).execute_batch(
        [SimpleLLMTask(f"third{i}", f"prompt {i}") for i in range(10)], checkpoint_name="third"
    )
    assert sim.stats.requests == 20  # cache off: every call made


def test_an_answer_cached_from_one_server_is_never_served_for_another(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    first = simulator(announce=False, responder=lambda request: "from A")
    second = simulator(announce=False, responder=lambda request: "from B")
    cache = tmp_path / "cache.sqlite3"
    task = [SimpleLLMTask("t", "the same question")]
    executor_for(client_for(first), cache=cache).execute_batch(task, checkpoint_name="a")
    other = executor_for(client_for(second), cache=cache).execute_batch(task, checkpoint_name="b")
    assert second.stats.requests == 1
    assert other.task_results[0].result == "from B" and not other.task_results[0].cached
    again = executor_for(client_for(first), cache=cache).execute_batch(task, checkpoint_name="c")
    assert first.stats.requests == 1 and again.task_results[0].result == "from A"
