"""The one place aita turns names into file names and writes files.

Writes are atomic (a temporary file, ``fsync``, then a rename: a crash leaves the old file or the
new, never half of one). ``safe_filename`` is the only way a name that came from a user, a
model or a file becomes part of a path: what it returns cannot leave its folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_HASH_LENGTH = 8


def safe_filename(text: str, *, limit: int = 80, distinct: bool = False, empty: str = "") -> str:
    """``text`` as a file name: ASCII letters, digits, ``_`` and ``-``, at most ``limit`` long.

    Accents are folded (``Ü`` -> ``U``) and every other run of characters becomes one ``_``, so
    no separator, dot or control character survives: ``../x`` is ``x``. ``distinct`` appends a
    short hash of the original to any name that had to change, so that distinct names stay
    distinct (``a/b`` and ``a_b``); an already safe name is returned unchanged either way.
    ``empty`` is used when nothing is left (with ``distinct``, the hash alone follows it).
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE.sub("_", folded).strip("_-")
    if cleaned == text and 0 < len(cleaned) <= limit:
        return cleaned
    if not distinct:
        return cleaned[:limit].strip("_-") or empty
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LENGTH]
    stem = cleaned[: max(1, limit - _HASH_LENGTH - 1)].strip("_-") or empty or "_"
    return f"{stem}-{digest}"


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def dumps(value: Any, *, indent: bool = False) -> bytes:
    """JSON bytes; pydantic models, paths, sets and tuples included."""
    option = _OPTIONS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(value, default=_default, option=option)


def json_line(value: Any) -> bytes:
    return dumps(value) + b"\n"


def write_json_atomic(path: Path, value: Any) -> None:
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
