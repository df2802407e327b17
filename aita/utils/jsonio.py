"""The one place aita writes result files: atomic whole-file writes (JSON or text) and journal
lines."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Path | set | frozenset | tuple):
        return list(value) if not isinstance(value, Path) else str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def dumps(value: Any, *, indent: bool = False) -> bytes:
    option = _OPTIONS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(value, default=_default, option=option)


def json_line(value: Any) -> bytes:
    return dumps(value) + b"\n"


def write_json_atomic(path: Path, value: Any) -> None:
    """Write via a temporary file and rename: a crash leaves the old file or the new, never half."""
    write_bytes_atomic(path, dumps(value, indent=True) + b"\n")


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())
