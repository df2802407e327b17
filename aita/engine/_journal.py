"""The checkpoint journal: an append-only JSON-lines file per batch, and the only code that
reads or writes its records (a result becomes a record in ``record_of``; a record becomes a
result again in ``restore``).

File: ``checkpoints/<name>_<YYYYmmdd_HHMMSS>.checkpoint.json``. The first line is a header
(name, batch fingerprint, task count); each later line is one finished task: its raw response
and usage (so a resumed run re-parses with the task's own ``parse_response``), or its error.

Why a journal: a finished task costs one ``write`` of one line, whatever the batch size, and a
process killed at any instant leaves every earlier line intact. Each line goes to the OS as soon
as the task finishes, so a SIGKILL loses at most the calls still in flight; ``fsync`` (which
only matters if the machine goes down) runs after ``checkpoint_interval`` records, at most once a
second, and on close. A torn last line
is dropped (with a warning) and cut off before appending. A file that is not a checkpoint, or of
a different batch, is reported and left alone: the run starts fresh instead of crashing or
silently reusing someone else's results. Checkpoints hold no API keys and are never pickle.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from aita.engine._client import Usage
from aita.engine._results import TaskResult, restored
from aita.engine._tasks import LLMTask
from aita.errors import CheckpointError
from aita.files import dumps, json_line, safe_filename

log = logging.getLogger("aita.checkpoint")

FORMAT_VERSION = 1
SUFFIX = ".checkpoint.json"
_STAMP = "%Y%m%d_%H%M%S"


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

    def to_json(self) -> dict[str, Any]:
        data = {
            "task_id": self.task_id,
            "ok": self.succeeded,
            "raw": self.raw_response,
            "usage": self.usage,
            "model": self.model,
            "error": self.error,
            "error_type": self.error_type,
            "retries": self.retry_count,
            "time": round(self.execution_time, 4),
        }
        if self.value is not None:
            data["value"] = self.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskRecord:
        return cls(
            task_id=str(data["task_id"]),
            succeeded=bool(data["ok"]),
            raw_response=data.get("raw"),
            value=data.get("value"),
            usage=data.get("usage"),
            model=data.get("model"),
            error=data.get("error"),
            error_type=data.get("error_type"),
            retry_count=int(data.get("retries") or 0),
            execution_time=float(data.get("time") or 0.0),
        )


@dataclass
class Checkpoint:
    name: str
    fingerprint: str
    total_tasks: int
    created_at: str = ""
    records: dict[str, TaskRecord] = field(default_factory=dict)
    path: Path | None = None
    valid_bytes: int = 0
    #: model -> {"cost", "prompt_tokens", "completion_tokens", "records"} over every record
    #: written, superseded ones included: each stands for calls that were made and paid for.
    spent: dict[str, dict[str, float]] = field(default_factory=dict)

    def add_spending(self, record: TaskRecord) -> None:
        usage = record.usage or {}
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
        return {k: r for k, r in self.records.items() if r.succeeded}

    @property
    def failed(self) -> dict[str, TaskRecord]:
        return {k: r for k, r in self.records.items() if not r.succeeded}

    def header(self) -> dict[str, Any]:
        return {
            "aita_checkpoint": FORMAT_VERSION,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "total_tasks": self.total_tasks,
            "created_at": self.created_at,
        }


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
        line = json_line(record.to_json())
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

    def close(self) -> None:
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
            match = pattern.match(path.name[: -len(SUFFIX)])
            if match:
                found.append((match["stamp"], int(match["n"] or 0), match["name"], path))
        found.sort(key=lambda f: (f[0], f[1]), reverse=True)
        return [(batch_name, path) for _, _, batch_name, path in found]

    def open_for_batch(self, name: str, fingerprint: str, total: int, resume: bool) -> Checkpoint:
        """The latest checkpoint of ``name`` to continue, if ``resume`` and it holds this batch;
        else a new one. A corrupt file or another batch's is reported, never reused."""
        latest = self.find_latest_checkpoint(name) if resume else None
        if latest is not None:
            try:
                previous = self.load(latest)
            except CheckpointError as error:
                log.warning("%s; starting fresh", error)
            else:
                if previous.fingerprint == fingerprint:
                    return previous
                log.warning(
                    "%s holds a different batch under the name %r; starting fresh", latest, name
                )
        return Checkpoint(name=name, fingerprint=fingerprint, total_tasks=total)

    # -- reading -------------------------------------------------------------------------------

    def load(self, path: str | Path) -> Checkpoint:
        """Read a checkpoint. A torn last line is dropped with a warning; a bad header raises."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CheckpointError(f"{path}: cannot read ({error.strerror})") from None
        lines = data.split(b"\n")
        try:
            header = orjson.loads(lines[0])
            if not isinstance(header, dict) or header.get("aita_checkpoint") != FORMAT_VERSION:
                raise ValueError("not an aita checkpoint")
            checkpoint = Checkpoint(
                name=str(header["name"]),
                fingerprint=str(header["fingerprint"]),
                total_tasks=int(header["total_tasks"]),
                created_at=str(header.get("created_at", "")),
                path=path,
            )
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path}: not a readable aita checkpoint ({error})") from None
        offset = len(lines[0]) + 1
        checkpoint.valid_bytes = offset
        skipped = 0
        for index, line in enumerate(lines[1:], start=1):
            is_last = index == len(lines) - 1
            if is_last and not line:
                break
            try:
                record = TaskRecord.from_json(orjson.loads(line))
            except (ValueError, KeyError, TypeError):
                if is_last:
                    log.warning(
                        "%s: dropped a torn last record (the process was killed mid-write)", path
                    )
                    break
                skipped += 1
                offset += len(line) + 1
                checkpoint.valid_bytes = offset
                continue
            checkpoint.records[record.task_id] = record  # a later line supersedes an earlier one
            checkpoint.add_spending(record)
            offset += len(line) + 1
            checkpoint.valid_bytes = offset
        if skipped:
            log.warning(
                "%s: skipped %d corrupt record(s); those tasks will run again", path, skipped
            )
        return checkpoint

    # -- writing -------------------------------------------------------------------------------

    def save(self, checkpoint: Checkpoint) -> Path:
        """Write a whole checkpoint (header and records) as a new file; returns its path."""
        path = self._create(checkpoint)
        with CheckpointJournal(path, fsync_interval=max(1, len(checkpoint.records))) as journal:
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
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if not checkpoint.created_at:
            checkpoint.created_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        base = f"{self.safe_name(checkpoint.name)}_{time.strftime(_STAMP)}"
        header = json_line(checkpoint.header())
        for n in range(1000):
            path = self.checkpoint_dir / f"{base}{f'_{n}' if n else ''}{SUFFIX}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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


# -- results and records -------------------------------------------------------------------


def record_of(result: TaskResult) -> TaskRecord:
    """What the checkpoint keeps; a fallback counts as failed, so a resume tries it again.

    A task answered inside a combined call has no response of its own: its result is kept
    instead, when it can be stored as JSON.
    """
    succeeded = result.success and not result.used_fallback
    value = None
    if succeeded and result.batched:
        try:
            dumps(result.result)
            value = result.result
        except TypeError:
            succeeded = False  # cannot be restored: run it again on resume
    return TaskRecord(
        task_id=result.task_id,
        succeeded=succeeded,
        raw_response=result.raw_response if succeeded else None,
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
    )


def restore(record: TaskRecord, task: LLMTask) -> TaskResult | None:
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
    return restored(
        task.task_id,
        value,
        raw_response=record.raw_response,
        usage=Usage.from_dict(record.usage),
        model=record.model,
        retry_count=record.retry_count,
        execution_time=record.execution_time,
    )


def restore_batch(tasks: Sequence[LLMTask], checkpoint: Checkpoint) -> dict[str, TaskResult]:
    """``restore`` for every task of a batch that has a record."""
    resumed: dict[str, TaskResult] = {}
    for task in tasks:
        record = checkpoint.records.get(task.task_id)
        if record is not None and (result := restore(record, task)) is not None:
            resumed[task.task_id] = result
    return resumed
