"""An opt-in response cache: a request asked before (same request key) is answered from disk.

    cache = ResponseCache("~/.cache/aita/responses.sqlite3")
    key = request_key(model, messages, params, task.version)
    response = cache.get(key, server)  # None: call, then cache.put(key, response, server)

``server`` is the provider's base URL (``client_server``): two servers may answer the same request
differently (another model behind the same name, a local stand-in), so an answer cached from one is
never served for another.

One SQLite file in WAL mode, so several processes on one machine can fill and read it at once:
readers never wait for the writer, writes are single short transactions that wait their turn
(``busy_timeout``), and a process killed mid-write leaves the file consistent. WAL needs shared
memory, so keep the file on a local disk, not a network share.

Only what answers a request is stored (content, usage, model, finish reason), never headers. A
cache is an optimisation: once open, a failing read or write logs a warning and counts as a
miss, so a broken cache costs calls, never a batch. Opening one that cannot be used (not a
database, not writable) is a ``ConfigError`` naming the file.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from aita.engine._client import LLMResponse, Usage
from aita.errors import ConfigError
from aita.files import private_file

log = logging.getLogger("aita.cache")

#: The layout of the file; a file from a newer aita (higher version) is refused, not misread.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    usage TEXT NOT NULL,
    model TEXT NOT NULL,
    finish_reason TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('hits', 0), ('misses', 0);
"""


class ResponseCache:
    """Responses by request key in one SQLite file, shared by threads and local processes."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        """``busy_timeout``: seconds a write waits for another process's before it fails."""
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._warned = False
        self._busy_timeout = busy_timeout
        try:
            private_file(self.path)  # 0600: the cache holds prompts' answers
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"response cache {self.path}: {error}") from None
        try:
            self._prepare()
        except sqlite3.Error as error:
            self._db.close()
            raise ConfigError(f"response cache {self.path}: {error}") from None

    def _prepare(self) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"made by a newer aita (layout {version})")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "responses" not in tables:  # someone else's database: leave it alone
            raise sqlite3.DatabaseError("a database, but not a response cache")
        db.execute("PRAGMA auto_vacuum = FULL")  # takes effect on a new file: clear() shrinks it
        self._use_wal()
        db.execute("PRAGMA synchronous = NORMAL")  # safe in WAL; a power cut may lose the last
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _use_wal(self) -> None:
        """Switch the file to WAL. Processes creating the file together race here, and SQLite
        answers the losers "locked" at once instead of waiting, so they wait and try again."""
        deadline = time.monotonic() + self._busy_timeout
        while self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def get(self, key: str, server: str = "") -> LLMResponse | None:
        """The response stored for ``key`` asked of ``server``, or None (counted as a hit or a
        miss)."""
        key = _stored_key(key, server)
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT content, usage, model, finish_reason FROM responses WHERE key = ?",
                    (key,),
                ).fetchone()
                self._db.execute(
                    "UPDATE counters SET value = value + 1 WHERE name = ?",
                    ("hits" if row else "misses",),
                )
        except sqlite3.Error as error:
            self._failed("read", error)
            return None
        if row is None:
            return None
        content, usage, model, finish_reason = row
        return LLMResponse(
            content=content,
            usage=Usage.from_dict(orjson.loads(usage)),
            model=model,
            finish_reason=finish_reason,
        )

    def put(self, key: str, response: LLMResponse, server: str = "") -> None:
        """Store ``response`` for ``key`` asked of ``server`` (replacing any earlier one);
        headers are left out."""
        row = (
            _stored_key(key, server),
            response.content,
            orjson.dumps(response.usage.to_dict()).decode(),
            response.model,
            response.finish_reason,
            time.time(),
        )
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses "
                    "(key, content, usage, model, finish_reason, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
        except sqlite3.Error as error:
            self._failed("write", error)

    def stats(self) -> dict[str, Any]:
        """``entries``; ``bytes`` on disk (the file and its write-ahead log); ``hits`` and
        ``misses`` of every process since the cache was created or last cleared."""
        with self._lock:
            entries = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return {
            "path": str(self.path),
            "entries": entries,
            "bytes": sum(_size(Path(f"{self.path}{suffix}")) for suffix in ("", "-wal")),
            "hits": counters.get("hits", 0),
            "misses": counters.get("misses", 0),
        }

    def clear(self) -> int:
        """Delete every entry and reset the counters; returns how many entries there were."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                removed: int = db.execute("DELETE FROM responses").rowcount
                db.execute("UPDATE counters SET value = 0")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            # Give the freed pages back to the file system (a no-op while others read).
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close(self) -> None:
        """Close the database (a cache in use by other processes is left as it is)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _failed(self, action: str, error: sqlite3.Error) -> None:
        if self._warned:
            log.debug("response cache %s: %s failed: %s", self.path, action, error)
            return
        self._warned = True
        log.warning(
            "response cache %s: %s failed (%s); going on without it where it fails",
            self.path,
            action,
            error,
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _stored_key(key: str, server: str) -> str:
    """The row's key: the request key, and the server it was asked of."""
    if not server:
        return key
    return hashlib.sha256(f"{server}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()
