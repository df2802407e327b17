"""The simulator's Files and Batches API: enough of OpenAI's for ``--batch-api`` and its tests.

    sim = ProviderSimulator().start()
    sim.batch_api.simulation = BatchSimulation(processing_seconds=2, failure_rate=0.1)

Endpoints: ``POST /v1/files`` (multipart upload, purpose ``batch``), ``GET /v1/files/{id}``,
``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches`` (newest first, with
``limit`` and ``after``), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. A batch is
``in_progress`` for ``processing_seconds`` after it is created (its request counts grow with the
time passed), then every item is answered at once by the simulator's normal answer logic
(``ProviderSimulator.answer``). Per item, ``failure_rate`` puts a 500 in the error file and
``expiry_rate`` leaves it undone (``batch_expired`` in the error file, the batch ``expired``), as a
provider does. A cancelled batch answers the share of items its time allowed. Reported costs are
the batch price: half the simulator's normal one.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import orjson

if TYPE_CHECKING:
    from aita.simulator.server import ProviderSimulator, _Handler

#: The paths this module serves; the simulator's handler routes them here.
BATCH_PATHS = ("/v1/files", "/v1/batches")

ENDPOINT = "/v1/chat/completions"
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


@dataclass
class BatchSimulation:
    """How simulated batches behave; rates are probabilities per item, times in seconds."""

    processing_seconds: float = 1.0
    failure_rate: float = 0.0
    #: the HTTP status of a failed item (503: the provider is down, retried without limit)
    failure_status: int = 500
    expiry_rate: float = 0.0
    #: the completion window the batches report (``expires_at``); a batch whose
    #: ``processing_seconds`` is longer stays ``in_progress`` past it: a provider that is stuck
    window_seconds: int = 24 * 3600
    #: OpenAI's limits per input file
    max_requests: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024
    #: what ``processing_seconds`` are measured on (a test's fake clock makes them instant)
    clock: Callable[[], float] = time.monotonic
    #: the wall clock of ``created_at`` and ``expires_at`` (a test's, to be late exactly)
    wall: Callable[[], float] = time.time
    #: the lines of each output file as the provider writes them (tests: a provider's odd lines)
    output_lines: Callable[[list[bytes]], list[bytes]] | None = None
    #: every file's content answered 500 (results that cannot be downloaded for now)
    unreadable_files: bool = False
    #: polls answered before every further one is refused (400): a client that polls forever
    #: fails instead of spinning (tests)
    max_retrievals: int | None = None


@dataclass
class BatchStats:
    """What the Files and Batches endpoints saw."""

    uploads: int = 0
    #: request lines in every uploaded batch file
    uploaded_requests: int = 0
    batches_created: int = 0
    retrievals: int = 0
    cancels: int = 0
    #: items answered with a completion, by the text of their last user message
    answered_by_prompt: Counter[str] = field(default_factory=Counter)
    failed_items: int = 0
    expired_items: int = 0

    def repeated_answers(self) -> int:
        """Items answered beyond the first, per prompt: work paid for twice."""
        return sum(count - 1 for count in self.answered_by_prompt.values() if count > 1)


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    started: float
    requests: list[dict[str, Any]]
    status: str = "in_progress"
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    ended_at: int | None = None
    window_seconds: int = 24 * 3600

    def to_json(self, now: float, seconds: float, failure_rate: float = 0.0) -> dict[str, Any]:
        total = len(self.requests)
        completed, failed = self.completed, self.failed
        if self.status == "in_progress":  # counts grow as time passes, failures among them
            share = min(1.0, (now - self.started) / seconds) if seconds > 0 else 1.0
            done = int(total * share)
            failed = int(done * failure_rate)
            completed = done - failed
        stamps = {
            "completed": "completed_at",
            "expired": "expired_at",
            "cancelled": "cancelled_at",
            "failed": "failed_at",
        }
        data: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.created_at,
            "expires_at": self.created_at + self.window_seconds,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "metadata": self.metadata,
        }
        if self.status in stamps:
            data[stamps[self.status]] = self.ended_at
        return data


class BatchService:
    """The Files and Batches endpoints of one simulator; state lives in memory."""

    def __init__(self, simulator: ProviderSimulator) -> None:
        self.simulator = simulator
        self.simulation = BatchSimulation()
        self.stats = BatchStats()
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self._counter = 0
        self._rng = random.Random(simulator.config.seed)

    # -- dispatch ------------------------------------------------------------------------------

    def handle(self, handler: _Handler, method: str, body: bytes) -> None:
        """Answer one request to a path under ``BATCH_PATHS``."""
        expected = self.simulator.config.api_key
        if expected is not None and handler.headers.get("authorization") != f"Bearer {expected}":
            handler._send(401, _error("Incorrect API key provided", "invalid_api_key"))
            return
        url = urlsplit(handler.path)
        parts = url.path.rstrip("/").split("/")[2:]  # after "/v1"
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            status, payload = self._route(method, parts, query, handler, body)
        except _Refused as refused:
            handler._send(refused.status, _error(str(refused), refused.kind))
            return
        if isinstance(payload, bytes):
            handler._send_raw(status, payload)
        else:
            handler._send(status, payload)

    def _route(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        handler: _Handler,
        body: bytes,
    ) -> tuple[int, Any]:
        match method, parts:
            case "POST", ["files"]:
                return 200, self._upload(handler.headers.get("content-type", ""), body)
            case "GET", ["files", file_id]:
                return 200, self._file(file_id).to_json()
            case "GET", ["files", file_id, "content"]:
                if self.simulation.unreadable_files:
                    raise _Refused(500, "the file cannot be read now", "server_error")
                return 200, self._file(file_id).data
            case "POST", ["batches"]:
                return 200, self._create(_json_body(body))
            case "GET", ["batches"]:
                return 200, self._list(query)
            case "GET", ["batches", batch_id]:
                return 200, self._retrieve(batch_id)
            case "POST", ["batches", batch_id, "cancel"]:
                return 200, self._cancel(batch_id)
        raise _Refused(404, f"unknown endpoint {method} /v1/{'/'.join(parts)}", "not_found")

    # -- files ---------------------------------------------------------------------------------

    def _upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        fields = _multipart(content_type, body)
        upload = fields.get("file")
        if upload is None:
            raise _Refused(400, "no file in the upload", "invalid_request_error")
        filename, data = upload
        purpose = fields.get("purpose", ("", b""))[1].decode()
        if purpose != "batch":
            raise _Refused(400, f"unsupported purpose {purpose!r}", "invalid_request_error")
        if len(data) > self.simulation.max_file_bytes:
            raise _Refused(
                400,
                f"file is {len(data)} bytes; at most {self.simulation.max_file_bytes} allowed",
                "invalid_request_error",
            )
        with self._lock:
            self.stats.uploads += 1
            self.stats.uploaded_requests += sum(1 for line in data.splitlines() if line.strip())
            file = self._new_file(filename or "batch.jsonl", "batch", data)
        return file.to_json()

    def _new_file(self, filename: str, purpose: str, data: bytes) -> _File:
        """Under the lock."""
        self._counter += 1
        file = _File(f"file-sim{self._counter:06d}", filename, purpose, data, int(time.time()))
        self._files[file.id] = file
        return file

    def _file(self, file_id: str) -> _File:
        with self._lock:
            file = self._files.get(file_id)
        if file is None:
            raise _Refused(404, f"No such File object: {file_id}", "not_found")
        return file

    # -- batches -------------------------------------------------------------------------------

    def _create(self, request: dict[str, Any]) -> dict[str, Any]:
        endpoint = request.get("endpoint")
        if endpoint != ENDPOINT:
            raise _Refused(400, f"unsupported endpoint {endpoint!r}", "invalid_request_error")
        file = self._file(str(request.get("input_file_id")))
        requests, errors = self._validate(file.data)
        now = self.simulation.wall()
        with self._lock:
            self._counter += 1
            self.stats.batches_created += 1
            batch = _Batch(
                id=f"batch_sim{self._counter:06d}",
                input_file_id=file.id,
                endpoint=endpoint,
                completion_window=str(request.get("completion_window") or "24h"),
                metadata=request.get("metadata"),
                created_at=int(now),
                started=self.simulation.clock(),
                requests=requests,
                window_seconds=self.simulation.window_seconds,
            )
            if errors:
                batch.status, batch.errors, batch.ended_at = "failed", errors, int(now)
            self._batches[batch.id] = batch
            return batch.to_json(self.simulation.clock(), self.simulation.processing_seconds)

    def _validate(self, data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The file's requests, or why the batch fails validation (as OpenAI reports it)."""
        requests: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                errors.append(_line_error("invalid_json", "line is not JSON", number))
                continue
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not isinstance(item.get("body"), dict):
                errors.append(_line_error("invalid_request", "no custom_id or body", number))
            elif item.get("url") != ENDPOINT or item.get("method") != "POST":
                errors.append(_line_error("invalid_url", f"url must be {ENDPOINT}", number))
            elif custom_id in seen:
                errors.append(_line_error("duplicate_custom_id", "custom_id repeated", number))
            else:
                seen.add(custom_id)
                requests.append(item)
        if len(requests) > self.simulation.max_requests:
            errors.append(
                _line_error(
                    "too_many_requests",
                    f"{len(requests)} requests; at most {self.simulation.max_requests}",
                    None,
                )
            )
        return requests, errors[:100]

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        limit = max(1, min(100, int(query.get("limit") or 20)))
        with self._lock:
            newest_first = sorted(self._batches.values(), key=lambda b: b.id, reverse=True)
            after = query.get("after")
            if after:
                newest_first = [b for b in newest_first if b.id < after]
            page = [self._advance(b) for b in newest_first[:limit]]
            more = len(newest_first) > limit
        return {"object": "list", "data": page, "has_more": more}

    def _retrieve(self, batch_id: str) -> dict[str, Any]:
        limit = self.simulation.max_retrievals
        if limit is not None and self.stats.retrievals >= limit:
            raise _Refused(400, f"polled more than {limit} times", "invalid_request_error")
        with self._lock:
            self.stats.retrievals += 1
            return self._advance(self._batch(batch_id))

    def _cancel(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            self.stats.cancels += 1
            batch = self._batch(batch_id)
            if batch.status == "in_progress":
                seconds = self.simulation.processing_seconds
                now = self.simulation.clock()
                share = min(1.0, (now - batch.started) / seconds) if seconds else 1.0
                self._finish(batch, int(len(batch.requests) * share), "cancelled")
                data = batch.to_json(now, seconds)
                data["status"] = "cancelling"  # as a provider answers the cancel itself
                return data
            return self._advance(batch)

    def _batch(self, batch_id: str) -> _Batch:
        """Under the lock."""
        batch = self._batches.get(batch_id)
        if batch is None:
            raise _Refused(404, f"No batch found with id '{batch_id}'", "not_found")
        return batch

    def _advance(self, batch: _Batch) -> dict[str, Any]:
        """The batch as it stands now; its items are answered once its time is up. Under the
        lock."""
        now, seconds = self.simulation.clock(), self.simulation.processing_seconds
        if batch.status == "in_progress" and now - batch.started >= seconds:
            self._finish(batch, len(batch.requests), "completed")
        return batch.to_json(now, seconds, self.simulation.failure_rate)

    def _finish(self, batch: _Batch, done: int, status: str) -> None:
        """Answer the first ``done`` items (the rest never ran), write the output and error
        files. Under the lock."""
        outputs: list[bytes] = []
        errors: list[bytes] = []
        expired = 0
        for item in batch.requests[:done]:
            roll = self._rng.random()
            if roll < self.simulation.expiry_rate:
                expired += 1
                errors.append(_expired_line(item))
            elif roll < self.simulation.expiry_rate + self.simulation.failure_rate:
                errors.append(self._failed_line(item))
            else:
                outputs.append(self._answered_line(item))
        if status == "completed" and expired:
            status = "expired"
        batch.status = status
        batch.completed, batch.failed = len(outputs), len(errors)
        batch.ended_at = int(time.time())
        self.stats.failed_items += len(errors) - expired
        self.stats.expired_items += expired
        if outputs and self.simulation.output_lines is not None:
            outputs = self.simulation.output_lines(outputs)
        if outputs:
            batch.output_file_id = self._new_file(
                f"{batch.id}_output.jsonl", "batch_output", b"".join(outputs)
            ).id
        if errors:
            batch.error_file_id = self._new_file(
                f"{batch.id}_error.jsonl", "batch_output", b"".join(errors)
            ).id

    def _answered_line(self, item: dict[str, Any]) -> bytes:
        # Imported here: the server module imports this one.
        from aita.simulator.server import _completion, _last_user_text

        request = item["body"]
        sim = self.simulator
        try:
            content = sim.answer(request)
        except Exception as error:  # a test's responder failed: the item fails, as a 500
            return self._failed_line(item, f"responder failed: {error}")
        body = _completion(request, content, sim.config.report_cost)
        if "cost" in body["usage"]:
            body["usage"]["cost"] /= 2  # the batch price
        self.stats.answered_by_prompt[_last_user_text(request)[0]] += 1
        return _line(item, {"status_code": 200, "request_id": _request_id(), "body": body}, None)

    def _failed_line(self, item: dict[str, Any], message: str = "simulated error") -> bytes:
        body = _error(message, "server_error")
        status = self.simulation.failure_status
        return _line(item, {"status_code": status, "request_id": _request_id(), "body": body}, None)


class _Refused(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": kind}}


def _line_error(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _request_id() -> str:
    return f"req_sim{random.getrandbits(48):012x}"


def _line(item: dict[str, Any], response: dict[str, Any] | None, error: Any) -> bytes:
    line = {
        "id": f"batch_req_sim{random.getrandbits(48):012x}",
        "custom_id": item["custom_id"],
        "response": response,
        "error": error,
    }
    return orjson.dumps(line) + b"\n"


def _expired_line(item: dict[str, Any]) -> bytes:
    return _line(item, None, {"code": "batch_expired", "message": EXPIRED_MESSAGE})


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Refused(400, "request body is not JSON", "invalid_request_error") from None
    if not isinstance(value, dict):
        raise _Refused(400, "request body is not a JSON object", "invalid_request_error")
    return value


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_NAME = re.compile(rb'name="([^"]*)"')
_FILENAME = re.compile(rb'filename="([^"]*)"')


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str, bytes]]:
    """The fields of a ``multipart/form-data`` body: name -> (file name, content)."""
    match = _BOUNDARY.search(content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise _Refused(400, "expected multipart/form-data", "invalid_request_error")
    fields: dict[str, tuple[str, bytes]] = {}
    for part in body.split(b"--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, _, content = part.partition(b"\r\n\r\n")
        name = _NAME.search(head)
        if name is None:
            continue
        filename = _FILENAME.search(head)
        fields[name.group(1).decode()] = (
            filename.group(1).decode() if filename else "",
            content.removesuffix(b"\r\n"),
        )
    return fields
