"""Result files written as tasks finish: a JSON object of id -> record, replaced atomically.

Each ``put`` rewrites the file through a temporary file and a rename, so a crash leaves the
previous complete version; the files hold tens of records, so the rewrite is cheap. A file that
is not valid is reported and left untouched (nothing is overwritten without ``--force``).

Every read goes through ``files.read_inside``: a result file must be a regular file of at most
``MAX_RESULT_BYTES`` inside its own folder (a link elsewhere is refused, never followed).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from aita.config import get_config
from aita.errors import validation_problem
from aita.files import FileRefused, read_inside, write_json_atomic
from aita.pipelines.assignment import AssignmentError

M = TypeVar("M", bound=BaseModel)

#: A result file larger than this is refused (aita's own are far smaller: answers are capped).
MAX_RESULT_BYTES = 64 * 1024 * 1024


class ResultFile(Generic[M]):
    def __init__(self, path: Path, model: type[M], *, fresh: bool = False) -> None:
        """``fresh`` ignores what the file holds (``--force``): it is replaced on the first put."""
        self.path = path
        self.model = model
        self._lock = threading.Lock()
        self.records: dict[str, M] = {} if fresh else self._load()

    def _load(self) -> dict[str, M]:
        try:
            return _parse_records(self.path, self.model)
        except FileRefused as refused:
            raise AssignmentError(f"{refused}; fix or remove it, or run with --force") from None
        except (OSError, ValueError, ValidationError) as error:
            reason = str(error).splitlines()[0]
            raise AssignmentError(
                f"{self.path}: cannot read earlier results ({reason}); "
                "fix or remove the file, or run with --force"
            ) from None

    def put(self, key: str, record: M) -> None:
        with self._lock:
            self.records[key] = record
            write_json_atomic(
                self.path, {k: v.model_dump(mode="json") for k, v in self.records.items()}
            )

    def get(self, key: str) -> M | None:
        return self.records.get(key)

    def drop(self, key: str) -> None:
        """Forget a record that no longer stands (its input is gone)."""
        with self._lock:
            if self.records.pop(key, None) is not None:
                write_json_atomic(
                    self.path, {k: v.model_dump(mode="json") for k, v in self.records.items()}
                )


def read_records(path: Path, model: type[M]) -> dict[str, M] | None:
    """A result file's records by id, for reading only; None when the file does not exist.

    Records may carry fields ``model`` does not know (they are ignored, not refused); a file
    that is not valid is an ``AssignmentError``: one line naming it.
    """
    if not path.exists():
        return None
    try:
        return _parse_records(path, model)
    except FileRefused as refused:
        raise AssignmentError(f"{refused}; fix or remove it") from None
    except (OSError, ValueError, ValidationError) as error:
        reason = str(error).splitlines()[0]
        raise AssignmentError(f"{path}: cannot read ({reason}); fix or remove the file") from None


def _parse_records(path: Path, model: type[M]) -> dict[str, M]:
    """The records of ``path`` (none if it does not exist); ValueError says which is invalid."""
    raw = _read(path)
    if raw is None:
        return {}
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    records = {}
    for key, value in data.items():
        try:
            records[str(key)] = model.model_validate(value)
        except ValidationError as error:
            where, what = validation_problem(error)
            raise ValueError(f"{key}.{where}: {what}" if where else f"{key}: {what}") from None
    return records


def read_model(path: Path, model: type[M]) -> M | None:
    """One JSON document as ``model``; None when the file does not exist."""
    try:
        raw = _read(path)
    except FileRefused as refused:
        raise AssignmentError(f"{refused}; remove it or use --force") from None
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0]
        raise AssignmentError(f"{path}: cannot read ({reason}); remove it or use --force") from None


def _read(path: Path) -> bytes | None:
    """The file's bytes (None if there is none): a regular file inside its own folder (unless
    ``AITA_ALLOW_OUTSIDE_PATHS``)."""
    allowed = get_config().allow_outside_paths
    return read_inside(
        path, path.parent, max_bytes=MAX_RESULT_BYTES, missing_ok=True, allow_outside=allowed
    )


def write_model(path: Path, record: BaseModel) -> None:
    write_json_atomic(path, record.model_dump(mode="json"))
