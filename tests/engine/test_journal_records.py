"""The journal's records on real files: what a finished task leaves in it, what a resume takes
back from it (in memory or through the on-disk index of a stream), and what its calls cost."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from aita.engine import (
    SIMULATED_HEADER,
    BatchableLLMTask,
    Checkpoint,
    CheckpointManager,
    LLMMessage,
    LLMResponse,
    SimpleLLMTask,
    TaskRecord,
    TaskResult,
    Usage,
)
from aita.errors import BadRequest, ProviderUnavailable
from tests.support.doubles import executor_for

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cost": 0.5}


class Scripted:
    """Answers each prompt from its script, in turn (the last item again once it runs out);
    an exception in the script is raised instead. Every answer is marked simulated."""

    def __init__(self, script: dict[str, list[str | Exception]]) -> None:
        self.script = script
        self.calls = 0
        self._lock = threading.Lock()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        with self._lock:
            self.calls += 1
            answers = self.script[str(messages[-1].content)]
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return LLMResponse(
            content=answer,
            usage=Usage(3, 4, 7, 0.5),
            model="model-x",
            finish_reason="stop",
            headers={SIMULATED_HEADER: "true"} if answer == "fine" else {},  # "good" only
        )


def record_expected(result: TaskResult, **changes: Any) -> TaskRecord:
    """The record the journal should keep of ``result``: its fields as they are."""
    fields: dict[str, Any] = {
        "task_id": result.task_id,
        "succeeded": result.success,
        "raw_response": result.raw_response,
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.tokens,
            "cost": result.cost,
        },
        "model": result.model,
        "error": result.error,
        "error_type": result.error_type,
        "retry_count": result.retry_count,
        "execution_time": round(result.execution_time, 4),
        "key": result.request_key,
        "simulated": result.simulated,
        "finish_reason": result.finish_reason,
        "used_fallback": result.used_fallback,
    }
    return TaskRecord(**{**fields, **changes})


def records_of(path: Path | None) -> dict[str, TaskRecord]:
    assert path is not None
    return CheckpointManager(path.parent).load(path).records


def lines_of(path: Path | None) -> dict[str, dict[str, Any]]:
    assert path is not None
    lines = [json.loads(line) for line in path.read_bytes().splitlines()[1:]]
    return {line["task_id"]: line for line in lines if "task_id" in line}


class Shout(SimpleLLMTask):
    """Falls back to a fixed answer when every attempt failed."""

    def fallback(self, error: Exception) -> Any:
        return "FALLBACK"


def test_each_finished_task_leaves_its_result_as_one_record() -> None:
    client = Scripted(
        {
            "good": ["fine"],
            "flaky": [ProviderUnavailable("busy", status_code=500), "fine at last"],
            "refused": [BadRequest("no such thing", status_code=400)],
            "unreadable": ["not a number"],
            "rescued": [BadRequest("no", status_code=400)],
        }
    )
    tasks = [
        SimpleLLMTask("good", "good"),
        SimpleLLMTask("flaky", "flaky"),
        SimpleLLMTask("refused", "refused"),
        SimpleLLMTask("unreadable", "unreadable", parse_fn=int),
        Shout("rescued", "rescued"),
    ]
    done = executor_for(client, max_workers=1, max_retries=1).execute_batch(
        tasks, checkpoint_name="job"
    )
    good, flaky, refused, unreadable, rescued = done.task_results
    assert good.request_key is not None and good.simulated and good.cost == 0.0  # simulated
    assert flaky.retry_count == 1 and refused.error_type == "BadRequest" and flaky.cost == 0.5
    assert unreadable.raw_response == "not a number"  # a failed parse keeps what it could not read
    assert rescued.success and rescued.used_fallback and rescued.error
    records = records_of(done.checkpoint_path)
    assert records == {
        "good": record_expected(good),
        "flaky": record_expected(flaky),
        "refused": record_expected(refused),
        "unreadable": record_expected(unreadable),
        # a fallback is no success: a resume asks again
        "rescued": record_expected(rescued, succeeded=False),
    }
    lines = lines_of(done.checkpoint_path)
    assert set(lines["good"]) == {
        "task_id",
        "key",
        "ok",
        "raw",
        "usage",
        "model",
        "error",
        "error_type",
        "retries",
        "time",
        "sim",
        "finish",
    }
    assert lines["rescued"]["fallback"] is True


class Squares(BatchableLLMTask):
    """Squares numbers, several in one call; ``keep`` makes a result JSON cannot hold."""

    def __init__(self, numbers: list[int], keep: bool = False) -> None:
        self.numbers = numbers
        self.keep = keep

    @property
    def task_id(self) -> str:
        return "n" + "_".join(map(str, self.numbers))

    def build_messages(self) -> list[LLMMessage]:
        return [LLMMessage(role="user", content=" ".join(map(str, self.numbers)))]

    def parse_response(self, response_text: str) -> Any:
        return json.loads(response_text)

    def can_batch_with(self, other: BatchableLLMTask) -> bool:
        return isinstance(other, Squares) and other.keep == self.keep

    def combine_with(self, others: list[BatchableLLMTask]) -> BatchableLLMTask:
        numbers = self.numbers + [n for o in others for n in o.numbers]  # type: ignore[attr-defined]
        return Squares(numbers, self.keep)

    def split_batch_result(self, batch_result: Any) -> dict[str, Any]:
        if self.keep:
            return {f"n{n}": complex(n * n) for n in self.numbers}  # JSON has no complex
        return {f"n{n}": batch_result[str(n)] for n in self.numbers}


class SquaresClient:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        text = str(messages[-1].content)
        self.asked.append(text)
        numbers = [int(n) for n in text.split()]
        return LLMResponse(content=json.dumps({str(n): n * n for n in numbers}), model="m")


def test_a_task_answered_in_a_combined_call_keeps_its_own_result_and_is_reused() -> None:
    client = SquaresClient()
    executor = executor_for(client, max_workers=1, max_batch_size=2)
    first = executor.execute_batch([Squares([2]), Squares([3])], checkpoint_name="sq")
    assert client.asked == ["2 3"]
    records = records_of(first.checkpoint_path)
    assert [(r.succeeded, r.raw_response, r.value) for r in records.values()] == [
        (True, None, 4),
        (True, None, 9),
    ]
    again = executor.execute_batch([Squares([2]), Squares([3])], checkpoint_name="sq")
    assert client.asked == ["2 3"]  # no call: both answered from the journal
    assert [(r.result, r.from_checkpoint, r.batched) for r in again.task_results] == [
        (4, True, True),
        (9, True, True),
    ]


def test_a_combined_result_that_cannot_be_stored_runs_again_on_resume() -> None:
    client = SquaresClient()
    executor = executor_for(client, max_workers=1, max_batch_size=2)
    tasks = [Squares([2], keep=True), Squares([3], keep=True)]
    first = executor.execute_batch(tasks, checkpoint_name="sets")
    assert [r.result for r in first.task_results] == [4 + 0j, 9 + 0j]
    records = records_of(first.checkpoint_path)
    assert [(r.succeeded, r.value, r.error) for r in records.values()] == [
        (False, None, None),
        (False, None, None),
    ]
    executor.execute_batch(tasks, checkpoint_name="sets")
    assert client.asked == ["2 3", "2 3"]


def test_a_plain_answer_is_kept_as_raw_text_and_nothing_else() -> None:
    done = executor_for(Scripted({"p": ["fine"]}), max_workers=1).execute_batch(
        [SimpleLLMTask("t", "p")], checkpoint_name="job"
    )
    record = records_of(done.checkpoint_path)["t"]
    assert (record.raw_response, record.value, record.used_fallback) == ("fine", None, False)
    assert "value" not in lines_of(done.checkpoint_path)["t"]


def full_record(**changes: Any) -> TaskRecord:
    fields: dict[str, Any] = {
        "task_id": "t",
        "succeeded": True,
        "raw_response": "ANSWER",
        "usage": dict(USAGE),
        "model": "m",
        "retry_count": 2,
        "execution_time": 1.5,
        "key": "k",
        "simulated": True,
        "finish_reason": "length",
    }
    return TaskRecord(**{**fields, **changes})


def test_every_field_of_a_record_comes_back_from_its_line(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="job")
    checkpoint.records = {
        "t": full_record(value={"n": [1, 2]}, raw_response=None, execution_time=0.123456),
        "f": full_record(task_id="f", succeeded=False, error="boom", error_type="X"),
        "b": full_record(task_id="b", succeeded=False, used_fallback=True, simulated=False),
    }
    loaded = manager.load(manager.save(checkpoint)).records
    assert loaded["t"] == full_record(value={"n": [1, 2]}, raw_response=None, execution_time=0.1235)
    assert loaded["f"] == checkpoint.records["f"]
    assert loaded["b"] == checkpoint.records["b"]
    assert "sim" not in lines_of(checkpoint.path)["b"]


def answer(journal: Any, task_id: str, key: str) -> tuple[Any, str]:
    """What ``journal`` (a checkpoint, or a stream's index) answers a task of that id whose
    request has that key (its parser lower-cases): the result, and how the task stood."""
    task = SimpleLLMTask(task_id, "p", parse_fn=str.lower)
    result, standing = journal.answer_for(task, key)
    return (result.result if result is not None else None), standing


def test_a_succeeded_record_answers_its_task_as_it_was(tmp_path: Path) -> None:
    checkpoint = Checkpoint(name="job", records={"t": full_record()})
    result, standing = checkpoint.answer_for(SimpleLLMTask("t", "p", parse_fn=str.lower), "k")
    assert standing == "reused"
    assert result == TaskResult(
        task_id="t",
        success=True,
        result="answer",  # parsed again, by the task's parser of today
        raw_response="ANSWER",
        retry_count=2,
        execution_time=1.5,
        tokens=7,
        prompt_tokens=3,
        completion_tokens=4,
        cost=0.5,
        model="m",
        from_checkpoint=True,
        request_key="k",
        simulated=True,
        finish_reason="length",
    )


def test_how_a_task_stands_against_the_journal(caplog: pytest.LogCaptureFixture) -> None:
    checkpoint = Checkpoint(
        name="job",
        records={
            "t": full_record(),
            "failed": full_record(task_id="failed", succeeded=False),
            "combined": full_record(task_id="combined", raw_response=None, value=[1, 2]),
            "empty": full_record(task_id="empty", raw_response=None, value=None),
            "broken": full_record(task_id="broken", raw_response="ANSWER"),
        },
    )
    assert answer(checkpoint, "t", "k") == ("answer", "reused")
    assert answer(checkpoint, "t", "another request") == (None, "changed")
    assert answer(checkpoint, "unknown", "k") == (None, "new")
    assert answer(checkpoint, "failed", "k") == (None, "rerun")
    assert answer(checkpoint, "combined", "k") == ([1, 2], "reused")
    assert answer(checkpoint, "empty", "k") == (None, "rerun")

    def refuse(text: str) -> str:
        raise ValueError("the parser changed")

    with caplog.at_level(logging.WARNING):
        broken = checkpoint.answer_for(SimpleLLMTask("broken", "p", parse_fn=refuse), "k")
    assert broken == (None, "rerun")
    assert [r.getMessage() for r in caplog.records] == [
        "task broken: checkpointed answer no longer parses (the parser changed); rerunning"
    ]


def test_a_stream_looks_records_up_in_an_index_on_disk(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "cp")
    checkpoint = Checkpoint(name="job")
    with manager.start_journal(checkpoint) as journal:
        journal.append(full_record(task_id="accents", raw_response="ÉTÉ À L'ÎLE", key="k1"))
        journal.append(full_record(task_id="failed", succeeded=False, key="k2"))
        journal.append(full_record(task_id="later", succeeded=False, key="k3"))
        journal.append(full_record(task_id="later", raw_response="SECOND", key="k3"))
        journal.start_run(3)
    folder = tmp_path / "index" / "deep"  # made as needed
    loaded, index = manager.open_for_stream("job", resume=True, index_dir=folder)
    assert index is not None
    assert (loaded.path, loaded.runs, loaded.records) == (checkpoint.path, [3], {})
    assert folder.is_dir()  # made where it was asked for, and its file already unnamed:
    assert list(folder.iterdir()) == []  # nothing is left behind even if the process is killed
    (held,) = open_files_in(folder)  # but it is there, on the disk it was given, while open
    assert re.fullmatch(r"\.journal-index-.+\.sqlite3", held.name)
    asked = [("accents", "k1"), ("failed", "k2"), ("later", "k3"), ("accents", "k9"), ("?", "k1")]
    try:
        with ThreadPoolExecutor(2) as workers:  # as a stream's workers do, from their threads
            answers = list(workers.map(lambda a: answer(index, *a), asked))
    finally:
        index.close()
    assert answers == [
        ("été à l'île", "reused"),
        (None, "rerun"),
        ("second", "reused"),  # the later record wins
        (None, "changed"),
        (None, "new"),
    ]
    assert list(folder.iterdir()) == [] and open_files_in(folder) == []
    _, again = manager.open_for_stream("job", resume=True, index_dir=folder)  # folder exists
    assert again is not None and len(open_files_in(folder)) == 1
    again.close()


def open_files_in(folder: Path) -> list[Path]:
    """Files this process holds open in ``folder``, named or not (Linux's /proc)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = Path(os.readlink(fd).removesuffix(" (deleted)"))
        except OSError:
            continue  # the descriptor of the listing itself, closed by now
        if target.parent == folder:
            held.append(target)
    return held


def test_spending_counts_every_record_that_made_a_call(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="job")
    spent: list[tuple[str, str | None, dict[str, Any] | None]] = [
        ("t0", "a", {"prompt_tokens": 3, "completion_tokens": 4, "cost": 0.5}),
        ("t0", "a", {"prompt_tokens": 10, "completion_tokens": 20, "cost": 0.25}),  # superseding
        ("t1", None, {"prompt_tokens": 1, "completion_tokens": 0, "cost": None}),
        ("t2", "b", {"cost": 0.125}),  # a price without token counts still counts
        ("t3", "b", None),  # no call answered
        ("t4", "b", {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0}),
        ("t5", "c", {"prompt_tokens": 2, "completion_tokens": 2}),
        ("t6", "d", {"completion_tokens": 5}),
    ]
    with manager.start_journal(checkpoint) as journal:
        for task_id, model, usage in spent:
            journal.append(TaskRecord(task_id, succeeded=True, usage=usage, model=model))
    assert checkpoint.path is not None
    assert manager.load(checkpoint.path).spent == {
        "a": {"cost": 0.75, "prompt_tokens": 13, "completion_tokens": 24, "records": 2},
        "unknown": {"cost": 0.0, "prompt_tokens": 1, "completion_tokens": 0, "records": 1},
        "b": {"cost": 0.125, "prompt_tokens": 0, "completion_tokens": 0, "records": 1},
        "c": {"cost": 0.0, "prompt_tokens": 2, "completion_tokens": 2, "records": 1},
        "d": {"cost": 0.0, "prompt_tokens": 0, "completion_tokens": 5, "records": 1},
    }
