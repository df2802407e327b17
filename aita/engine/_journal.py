"""The checkpoint journal: an append-only JSON-lines file per batch, and the only code that
reads or writes its records (a result becomes a record in ``record_of``, or its line at once in
``line_of``, as a live run writes it; a record becomes a result again in
``Checkpoint.answer_for``).

File: ``checkpoints/<name>_<YYYYmmdd_HHMMSS>.checkpoint.json``. The first line is a header
(format version, name, creation time); a run line (``{"run": ..., "tasks": N}``) starts each
run that continues the file; every other line is one finished task: its request key (what was
asked: model, messages, parameters, task version), its raw response and usage (so a resumed run
re-parses with the task's own ``parse_response``), or its error. A task is answered from the
journal only if a record with its id and the same request key succeeded: another model, an
edited prompt or new parameters run again, and a later record of a task supersedes an earlier.

Why a journal: a finished task costs one ``write`` of one line, whatever the batch size, and a
process killed at any instant leaves every earlier line intact. Each line goes to the OS as soon
as the task finishes, so a SIGKILL loses at most the calls still in flight; ``fsync`` (which
only matters if the machine goes down) runs after ``checkpoint_interval`` records, at most once a
second, and on close. Every line is validated field by field on reading: a torn last line is
dropped and cut off before appending, any other invalid line is skipped with a warning (its task
runs again), so no content of a file can crash a resume or the commands that read it.
Checkpoints hold no API keys and are never pickle.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, NonNegativeFloat, NonNegativeInt, ValidationError

from aita.engine._client import Usage
from aita.engine._results import TaskResult, reused_from_journal
from aita.engine._tasks import LLMTask
from aita.errors import CheckpointError
from aita.files import dumps, json_line, private_folder, safe_filename

log = logging.getLogger("aita.checkpoint")

FORMAT_VERSION = 2
#: Versions this code reads (version 1 had no request keys: its records never match a task).
READABLE_VERSIONS = frozenset({1, 2})
SUFFIX = ".checkpoint.json"
#: No valid record is longer: answers are capped (``AITA_MAX_ANSWER_BYTES``, 4 MB by default),
#: and a record holds one answer, escaped. A longer line is skipped unread.
MAX_LINE_BYTES = 64 * 1024 * 1024
_STAMP = "%Y%m%d_%H%M%S"

#: How a task stood against the journal when it came up: answered from it, or why not.
Standing = Literal["reused", "changed", "new", "rerun"]


@dataclass
class TaskRecord:
    """A finished task as the checkpoint keeps it."""

    task_id: str
    succeeded: bool
    raw_response: str | None = None
    #: the result itself, for a task answered inside a combined call (no response of its own)
    value: Any = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    error: str | None = None
    error_type: str | None = None
    retry_count: int = 0
    execution_time: float = 0.0
    #: what was asked (``aita.engine.request_key``); None in files of an older aita
    key: str | None = None
    #: answered by the provider simulator, not a real model
    simulated: bool = False
    finish_reason: str | None = None
    #: the task's fallback stood in (the record is not ``succeeded``: a resume tries again)
    used_fallback: bool = False

    def to_json(self) -> dict[str, Any]:
        """The record as its journal line holds it."""
        return _line(
            self.task_id, self.key, self.succeeded, self.raw_response, self.usage, self.model,
            self.error, self.error_type, self.retry_count, self.execution_time, self.value,
            self.simulated, self.finish_reason, self.used_fallback,
        )  # fmt: skip

    @classmethod
    def from_json_line(cls, line: bytes) -> TaskRecord:
        """Raises ``ValueError`` (a ``ValidationError``) for anything but a valid record."""
        data = _RecordLine.model_validate_json(line)
        return cls(
            task_id=data.task_id,
            succeeded=data.ok,
            raw_response=data.raw,
            value=data.value,
            usage=data.usage.model_dump(exclude_unset=True) if data.usage is not None else None,
            model=data.model,
            error=data.error,
            error_type=data.error_type,
            retry_count=data.retries,
            execution_time=data.time,
            key=data.key,
            simulated=data.sim,
            finish_reason=data.finish,
            used_fallback=data.fallback,
        )


class _UsageLine(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    total_tokens: NonNegativeInt = 0
    cost: NonNegativeFloat | None = None


class _RecordLine(BaseModel):
    """A task line as it must be: strict types, so ``"ok": "false"`` is no success."""

    model_config = ConfigDict(extra="ignore", strict=True)

    task_id: str
    key: str | None = None
    ok: bool
    raw: str | None = None
    value: Any = None
    usage: _UsageLine | None = None
    model: str | None = None
    sim: bool = False
    finish: str | None = None
    fallback: bool = False
    error: str | None = None
    error_type: str | None = None
    retries: NonNegativeInt = 0
    time: NonNegativeFloat = 0.0


class _RunLine(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    run: str
    tasks: NonNegativeInt


@dataclass
class Checkpoint:
    """A journal's content: its latest record per task, and what every record cost."""

    name: str
    created_at: str = ""
    records: dict[str, TaskRecord] = field(default_factory=dict)
    path: Path | None = None
    valid_bytes: int = 0
    #: the number of tasks of each run that wrote to this file, oldest first
    runs: list[int] = field(default_factory=list)
    #: model -> {"cost", "prompt_tokens", "completion_tokens", "records"} over every record
    #: written, superseded ones included: each stands for calls that were made and paid for.
    spent: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def total_tasks(self) -> int:
        """The task count of the latest run (the records, for a file without run lines)."""
        return self.runs[-1] if self.runs else len(self.records)

    def add_spending(self, record: TaskRecord) -> None:
        """Count what a record's calls cost (every record written, superseded ones too)."""
        usage = record.usage or {}
        tokens = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        if not tokens and not usage.get("cost"):
            return  # no call answered: nothing was spent
        totals = self.spent.setdefault(
            record.model or "unknown",
            {"cost": 0.0, "prompt_tokens": 0, "completion_tokens": 0, "records": 0},
        )
        totals["cost"] += float(usage.get("cost") or 0.0)
        totals["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        totals["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        totals["records"] += 1

    @property
    def succeeded(self) -> dict[str, TaskRecord]:
        """The latest records that succeeded, by task id."""
        return {k: r for k, r in self.records.items() if r.succeeded}

    @property
    def failed(self) -> dict[str, TaskRecord]:
        """The latest records that did not succeed (fallbacks included), by task id."""
        return {k: r for k, r in self.records.items() if not r.succeeded}

    def header(self) -> dict[str, Any]:
        """The file's first line."""
        return {"aita_checkpoint": FORMAT_VERSION, "name": self.name, "created_at": self.created_at}

    def answer_for(self, task: LLMTask, key: str) -> tuple[TaskResult | None, Standing]:
        """The task's earlier answer if a record with its id and this request key succeeded
        (re-parsed by the task's own ``parse_response``), and how the task stood."""
        return _standing(self.records.get(task.task_id), task, key)


class CheckpointJournal:
    """Appends finished tasks to a checkpoint file; safe to call from many threads.

    Every record is written at once (a killed process loses none); ``fsync``, which only matters
    if the machine itself goes down, runs once ``fsync_interval`` records are pending and at
    least ``FSYNC_SECONDS`` have passed, and on close, so it never dominates a fast batch.
    """

    FSYNC_SECONDS = 1.0

    def __init__(self, path: Path, fsync_interval: int = 10) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._fsync_interval = max(1, fsync_interval)
        self._unsynced = 0
        self._synced_at = time.monotonic()
        self._lock = threading.Lock()

    def append(self, record: TaskRecord) -> None:
        """Write one finished task. After ``close`` this drops the record: a worker abandoned at
        Ctrl-C may finish late, and its task simply runs again on resume."""
        self._write(json_line(record.to_json()))

    def append_result(self, result: TaskResult) -> None:
        """``append(record_of(result))``, without the record in between (once per task)."""
        self._write(json_line(line_of(result)))

    def _write(self, line: bytes) -> None:
        with self._lock:
            if self._fd < 0:
                return
            os.write(self._fd, line)  # one syscall: a kill cannot split it
            self._unsynced += 1
            if self._unsynced >= self._fsync_interval:
                now = time.monotonic()
                if now - self._synced_at >= self.FSYNC_SECONDS:
                    os.fsync(self._fd)
                    self._unsynced = 0
                    self._synced_at = now

    def start_run(self, tasks: int) -> None:
        """Mark the start of a run of ``tasks`` tasks continuing this file."""
        line = json_line({"run": time.strftime("%Y-%m-%dT%H:%M:%S"), "tasks": tasks})
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, line)

    def close(self) -> None:
        """Sync to disk and close; later appends are dropped (their tasks run again)."""
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> CheckpointJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CheckpointManager:
    """Finds, reads, writes and cleans the checkpoint files of one folder."""

    def __init__(self, checkpoint_dir: str | Path = "checkpoints") -> None:
        self.checkpoint_dir = Path(checkpoint_dir)

    # -- names and listing ---------------------------------------------------------------------

    @staticmethod
    def safe_name(name: str) -> str:
        """File-safe form of a checkpoint name: nothing can leave the checkpoint folder."""
        return safe_filename(name, limit=120, distinct=True, empty="batch")

    def list_checkpoints(self, name: str | None = None) -> list[Path]:
        """Checkpoint files, newest first; only those of ``name`` when given."""
        return [path for _, path in self._entries(name)]

    def find_latest_checkpoint(self, name: str) -> Path | None:
        """The newest checkpoint file of ``name``, or None."""
        paths = self.list_checkpoints(name)
        return paths[0] if paths else None

    def cleanup(self, name: str | None = None, keep_latest: int = 0) -> list[Path]:
        """Delete checkpoints (of ``name``, or all), keeping the newest ``keep_latest`` per name."""
        removed: list[Path] = []
        kept: dict[str, int] = {}
        for batch_name, path in self._entries(name):
            kept[batch_name] = kept.get(batch_name, 0) + 1
            if kept[batch_name] > keep_latest:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def _entries(self, name: str | None) -> list[tuple[str, Path]]:
        if not self.checkpoint_dir.is_dir():
            return []
        name_pattern = ".+" if name is None else re.escape(self.safe_name(name))
        pattern = re.compile(
            rf"^(?P<name>{name_pattern})_(?P<stamp>\d{{8}}_\d{{6}})(?:_(?P<n>\d+))?$"
        )
        found: list[tuple[str, int, str, Path]] = []
        for path in self.checkpoint_dir.glob(f"*{SUFFIX}"):
            if not path.is_file() or path.is_symlink():
                continue  # a FIFO, a folder or a link is no checkpoint of ours
            match = pattern.match(path.name[: -len(SUFFIX)])
            if match:
                found.append((match["stamp"], int(match["n"] or 0), match["name"], path))
        found.sort(reverse=True)  # newest first; within one second, the highest number
        return [(batch_name, path) for _, _, batch_name, path in found]

    def open_for_batch(self, name: str, resume: bool) -> Checkpoint:
        """The latest checkpoint of ``name`` to continue (whatever tasks it holds: each is
        reused only if its request key matches), or a new one when ``resume`` is off or there
        is none. A file that cannot be read is reported and left alone; a new one is started."""
        latest = self.find_latest_checkpoint(name) if resume else None
        if latest is not None:
            try:
                return self.load(latest)
            except CheckpointError as error:
                log.warning("%s; starting a new checkpoint", error)
        return Checkpoint(name=name)

    # -- reading -------------------------------------------------------------------------------

    def load(self, path: str | Path, index: JournalIndex | None = None) -> Checkpoint:
        """Read a checkpoint line by line. An invalid record is skipped with a warning (a torn
        last one silently: the process was killed mid-write); a file that is not a checkpoint
        raises ``CheckpointError``. With ``index``, records go there (on disk) instead of into
        memory: a stream resumes from a journal of any size."""
        path = Path(path)
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would hang, a device not end
                raise CheckpointError(f"{path}: not a regular file")
            handle = open(path, "rb")  # noqa: SIM115 - closed below, after the header check
        except OSError as error:
            raise CheckpointError(f"{path}: cannot read ({error.strerror})") from None
        with handle:
            first = handle.readline(MAX_LINE_BYTES)
            checkpoint = _from_header(first, path)
            offset = checkpoint.valid_bytes = len(first)
            skipped = 0
            while line := handle.readline(MAX_LINE_BYTES + 1):
                if len(line) > MAX_LINE_BYTES:  # no record is that long: skip to the line's end
                    while line and not line.endswith(b"\n"):
                        offset += len(line)
                        line = handle.readline(MAX_LINE_BYTES)
                    if not line:  # the file ends inside it: a torn last line, cut off as one
                        log.warning("%s: dropped a torn last record (killed mid-write)", path)
                        break
                    offset += len(line)
                    checkpoint.valid_bytes = offset
                    skipped += 1
                    continue
                if not line.endswith(b"\n"):  # only the last line can lack one: cut it off
                    log.warning("%s: dropped a torn last record (killed mid-write)", path)
                    break
                skipped += not _read_line(line, checkpoint, index, offset)
                offset += len(line)
                checkpoint.valid_bytes = offset
        if index is not None:
            index.finish_building(path)
        if skipped:
            log.warning(
                "%s: skipped %d invalid record(s); those tasks will run again", path, skipped
            )
        return checkpoint

    def open_for_stream(
        self, name: str, resume: bool, index_dir: Path
    ) -> tuple[Checkpoint, JournalIndex | None]:
        """As ``open_for_batch``, but the records of the journal continued are indexed on disk
        (in ``index_dir``) instead of held in memory."""
        latest = self.find_latest_checkpoint(name) if resume else None
        if latest is not None:
            index = JournalIndex(index_dir)
            try:
                return self.load(latest, index), index
            except CheckpointError as error:
                index.close()
                log.warning("%s; starting a new checkpoint", error)
        return Checkpoint(name=name), None

    # -- writing -------------------------------------------------------------------------------

    def save(self, checkpoint: Checkpoint) -> Path:
        """Write a whole checkpoint (header, runs, records) as a new file; returns its path."""
        path = self._create(checkpoint)
        with CheckpointJournal(path, fsync_interval=max(1, len(checkpoint.records))) as journal:
            for tasks in checkpoint.runs:
                journal.start_run(tasks)
            for record in checkpoint.records.values():
                journal.append(record)
        return path

    def start_journal(self, checkpoint: Checkpoint, fsync_interval: int = 10) -> CheckpointJournal:
        """A journal that appends to ``checkpoint.path``, or to a new file if it has none."""
        if checkpoint.path is None:
            checkpoint.path = self._create(checkpoint)
        else:
            with open(checkpoint.path, "r+b") as handle:  # cut a torn tail before appending
                handle.truncate(checkpoint.valid_bytes)
        return CheckpointJournal(checkpoint.path, fsync_interval)

    def _create(self, checkpoint: Checkpoint) -> Path:
        private_folder(self.checkpoint_dir)
        if not checkpoint.created_at:
            checkpoint.created_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        base = f"{self.safe_name(checkpoint.name)}_{time.strftime(_STAMP)}"
        header = json_line(checkpoint.header())
        for n in range(1000):
            path = self.checkpoint_dir / f"{base}{f'_{n}' if n else ''}{SUFFIX}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            try:
                os.write(fd, header)
                os.fsync(fd)
            finally:
                os.close(fd)
            checkpoint.valid_bytes = len(header)
            checkpoint.path = path
            return path
        raise CheckpointError(f"cannot create a checkpoint file for {checkpoint.name!r}")


# -- lines, results and records -------------------------------------------------------------


def _from_header(line: bytes, path: Path) -> Checkpoint:
    try:
        header = orjson.loads(line)
        if not isinstance(header, dict) or header.get("aita_checkpoint") not in READABLE_VERSIONS:
            raise ValueError("not an aita checkpoint")
        checkpoint = Checkpoint(
            name=str(header["name"]), created_at=str(header.get("created_at", "")), path=path
        )
        if "total_tasks" in header:  # version 1: the header held the only run's size
            checkpoint.runs.append(int(header["total_tasks"]))
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: not a readable aita checkpoint ({error})") from None
    if not line.endswith(b"\n"):
        raise CheckpointError(f"{path}: not a readable aita checkpoint (no complete header)")
    return checkpoint


def _read_line(
    line: bytes, checkpoint: Checkpoint, index: JournalIndex | None, offset: int
) -> bool:
    """Add one line (a task record or a run line) to ``checkpoint`` (or a task record to
    ``index``); False if it is invalid."""
    try:
        record = TaskRecord.from_json_line(line)
    except ValueError:
        try:
            checkpoint.runs.append(_RunLine.model_validate_json(line).tasks)
        except ValidationError:
            return False
        return True
    if index is not None:
        index.add(record, offset, len(line))
    else:
        checkpoint.records[record.task_id] = record  # a later line supersedes an earlier one
        checkpoint.add_spending(record)
    return True


def _standing(
    record: TaskRecord | None, task: LLMTask, key: str
) -> tuple[TaskResult | None, Standing]:
    if record is None:
        return None, "new"
    if record.key != key:
        return None, "changed"
    result = reuse(record, task)
    return (result, "reused") if result is not None else (None, "rerun")


class JournalIndex:
    """Where each task's latest record sits in a journal, kept in a temporary SQLite file, so
    a stream resumes from a journal of millions of lines without holding it in memory. Only
    the id, the request key and the line's place are indexed; a record is read back when its
    task comes up."""

    def __init__(self, folder: Path) -> None:
        private_folder(folder)
        handle, name = tempfile.mkstemp(dir=folder, prefix=".journal-index-", suffix=".sqlite3")
        os.close(handle)
        self._db = sqlite3.connect(name, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE records (task_id TEXT PRIMARY KEY, offset INTEGER, length INTEGER)"
        )
        # The open database outlives its name: nothing is left behind, even after a SIGKILL.
        os.unlink(name)
        self._pending: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()
        self._journal: Any = None

    def add(self, record: TaskRecord, offset: int, length: int) -> None:
        self._pending.append((record.task_id, offset, length))
        if len(self._pending) >= 10_000:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", self._pending)
        self._pending.clear()

    def finish_building(self, journal: Path) -> None:
        self._flush()
        self._db.commit()
        self._journal = open(journal, "rb")  # noqa: SIM115 - closed in close()

    def answer_for(self, task: LLMTask, key: str) -> tuple[TaskResult | None, Standing]:
        """As ``Checkpoint.answer_for``, reading the task's record back from the journal."""
        with self._lock:
            row = self._db.execute(
                "SELECT offset, length FROM records WHERE task_id = ?", (task.task_id,)
            ).fetchone()
            record = None
            if row is not None:
                self._journal.seek(row[0])
                record = TaskRecord.from_json_line(self._journal.read(row[1]))
        return _standing(record, task, key)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._journal is not None:
                self._journal.close()


def record_of(result: TaskResult) -> TaskRecord:
    """What the checkpoint keeps; a fallback counts as failed, so a resume tries it again.

    A task answered inside a combined call has no response of its own: its result is kept
    instead, when it can be stored as JSON.
    """
    succeeded = result.success and not result.used_fallback
    value = None
    if succeeded and result.combined:
        try:
            dumps(result.result)
            value = result.result
        except TypeError:
            succeeded = False  # cannot be reused: run it again on resume
    return TaskRecord(
        task_id=result.task_id,
        succeeded=succeeded,
        raw_response=result.raw_response,  # a failed parse keeps the answer it could not read
        value=value,
        usage={
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.tokens,
            "cost": result.cost,
        },
        model=result.model,
        error=None if succeeded else result.error,
        error_type=None if succeeded else result.error_type,
        retry_count=result.retry_count,
        execution_time=result.execution_time,
        key=result.request_key,
        simulated=result.simulated,
        finish_reason=result.finish_reason,
        used_fallback=result.used_fallback,
    )


def line_of(result: TaskResult) -> dict[str, Any]:
    """``record_of(result).to_json()``, built at once: the journal line of a finished task
    (a test holds the two equal)."""
    succeeded = result.success and not result.used_fallback
    if succeeded and result.combined:
        return record_of(result).to_json()  # its value, if it can be kept (rare: no hurry)
    usage = {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.tokens,
        "cost": result.cost,
    }
    return _line(
        result.task_id, result.request_key, succeeded, result.raw_response, usage, result.model,
        None if succeeded else result.error, None if succeeded else result.error_type,
        result.retry_count, result.execution_time, None, result.simulated, result.finish_reason,
        result.used_fallback,
    )  # fmt: skip


def _line(
    task_id: str, key: str | None, ok: bool, raw: str | None, usage: dict[str, Any] | None,
    model: str | None, error: str | None, error_type: str | None, retries: int, seconds: float,
    value: Any, simulated: bool, finish_reason: str | None, used_fallback: bool,
) -> dict[str, Any]:  # fmt: skip
    """The one writer of a journal line's fields (a record's, or a result's at once)."""
    data = {
        "task_id": task_id,
        "key": key,
        "ok": ok,
        "raw": raw,
        "usage": usage,
        "model": model,
        "error": error,
        "error_type": error_type,
        "retries": retries,
        "time": round(seconds, 4),
    }
    if value is not None:
        data["value"] = value
    if simulated:
        data["sim"] = True
    if finish_reason is not None:
        data["finish"] = finish_reason
    if used_fallback:
        data["fallback"] = True
    return data


def reuse(record: TaskRecord, task: LLMTask) -> TaskResult | None:
    """The result of a task that succeeded before, its answer re-parsed by the task's own
    ``parse_response``; None if it did not succeed or no longer parses (it runs again)."""
    if not record.succeeded:
        return None
    if record.raw_response is None:
        if record.value is None:
            return None
        value = record.value  # answered in a combined call: the stored result
    else:
        try:
            value = task.parse_response(record.raw_response)
        except Exception as error:
            log.warning(
                "task %s: checkpointed answer no longer parses (%s); rerunning", task.task_id, error
            )
            return None
    return reused_from_journal(
        task.task_id,
        value,
        raw_response=record.raw_response,
        usage=Usage.from_dict(record.usage),
        model=record.model,
        retry_count=record.retry_count,
        execution_time=record.execution_time,
        request_key=record.key,
        simulated=record.simulated,
        finish_reason=record.finish_reason,
    )
