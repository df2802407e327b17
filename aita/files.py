"""The one place aita turns names into file names, reads the files it is given and writes files.

Writes are atomic (a temporary file, ``fsync``, then a rename: a crash leaves the old file or the
new, never half of one), and private: files 0600 in folders made 0700 (``private_folder``,
``private_file``), as everything aita writes holds prompts or answers. ``safe_filename`` is the
only way a name that came from a user, a model or a file becomes part of a path: what it returns
cannot leave its folder.

``read_inside`` is the only way aita reads a file it was handed (an assignment's files, a
student's pages, earlier results): the file, once its links are followed, must be inside its
folder, a regular file (not a FIFO that would block, nor ``/dev/zero``) and at most a size
limit, and no more than that limit (plus one byte) is ever read. Anything else is a
``FileRefused`` whose message is one line naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Literal, overload

import orjson

from aita.errors import AitaError

#: The limit for JSON and text inputs (an exam spec, instructions, rubrics): far above any real one.
MAX_INPUT_BYTES = 10 * 1024 * 1024
#: Opened without blocking (a FIFO is refused after ``fstat`` instead of waiting for a writer).
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

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
    return orjson.dumps(value, default=_default, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)


def private_folder(folder: Path) -> None:
    """``folder`` and every missing folder above it, made 0700: what aita writes holds prompts
    and answers, for their owner only (``mkdir(parents=True)`` gives the parents the umask's
    0755). A folder already there is left as it is."""
    missing = []
    while not folder.is_dir() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)


def private_file(path: Path) -> None:
    """Create ``path`` empty, 0600, unless it exists (SQLite then opens it, and its ``-wal``
    and ``-shm`` files take the same mode)."""
    private_folder(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, dumps(value, indent=True) + b"\n")


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """``data`` as ``path``, 0600 (``mkstemp``'s mode) in folders made 0700."""
    private_folder(path.parent)
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


class FileRefused(AitaError):
    """A file aita will not read: missing, outside its folder, not a regular file, too large or
    unreadable. The message is one line naming the file."""


class OutsideRoot(FileRefused):
    """The file, once its links are followed, is outside the folder it must stay in."""


def resolved_inside(
    path: Path, root: Path, *, allow_outside: bool = False, root_name: str | None = None
) -> Path:
    """``path`` with every link followed, if that is inside ``root`` (itself resolved).

    ``root_name`` names the folder in the message (``the assignment``); ``allow_outside`` skips
    the containment check (the file must still exist).
    """
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        problem = "broken link or unreadable file" if path.is_symlink() else "file not found"
        raise FileRefused(f"{path}: {problem}") from None
    except (OSError, RuntimeError):  # a loop of links, a permission denied on the way
        raise FileRefused(f"{path}: broken link or unreadable file") from None
    if not allow_outside and not real.is_relative_to(root.resolve()):
        how = "a link to" if path.is_symlink() else "leads to"
        raise OutsideRoot(f"{path}: {how} {real}, outside {root_name or root}; not read")
    return real


@overload
def read_inside(
    path: Path,
    root: Path,
    *,
    max_bytes: int = ...,
    missing_ok: Literal[False] = ...,
    allow_outside: bool = ...,
    root_name: str | None = ...,
) -> bytes: ...


@overload
def read_inside(
    path: Path,
    root: Path,
    *,
    max_bytes: int = ...,
    missing_ok: bool,
    allow_outside: bool = ...,
    root_name: str | None = ...,
) -> bytes | None: ...


def read_inside(
    path: Path,
    root: Path,
    *,
    max_bytes: int = MAX_INPUT_BYTES,
    missing_ok: bool = False,
    allow_outside: bool = False,
    root_name: str | None = None,
) -> bytes | None:
    """The bytes of ``path``, a regular file inside ``root`` of at most ``max_bytes``.

    With ``missing_ok``, a path where nothing exists gives None (a broken link is still refused:
    someone meant it to lead somewhere). Never reads more than ``max_bytes + 1`` bytes, never
    blocks on a FIFO, never opens a device. Raises ``FileRefused`` (``OutsideRoot`` for a file
    that leads out of ``root``).
    """
    if missing_ok and not os.path.lexists(path):
        return None
    real = resolved_inside(path, root, allow_outside=allow_outside, root_name=root_name)
    try:
        _check_file(path, os.stat(real), max_bytes)  # before opening: a device is never opened
        fd = os.open(real, _OPEN_FLAGS)
        with os.fdopen(fd, "rb") as handle:
            _check_file(path, os.fstat(handle.fileno()), max_bytes)  # what was really opened
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise FileRefused(f"{path}: cannot read ({error.strerror or error})") from None
    if len(data) > max_bytes:
        raise FileRefused(f"{path}: more than the limit of {_megabytes(max_bytes)}")
    return data


def _check_file(path: Path, info: os.stat_result, max_bytes: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise FileRefused(f"{path}: a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"{path}: not a regular file")
    if info.st_size > max_bytes:
        raise FileRefused(
            f"{path}: {_megabytes(info.st_size)}, more than the limit of {_megabytes(max_bytes)}"
        )


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
