"""``aita batch run``: a file of requests in, a file of results out, in OpenAI's Batch API formats.

A request line is what OpenAI's Batch API takes (``{"custom_id", "method": "POST", "url":
"/v1/chat/completions", "body": {"model", "messages", ...}}``), or just ``{"custom_id",
"messages"}`` or ``{"custom_id", "prompt"}`` with any request parameters beside them. Each
becomes a ``RequestTask`` whose parameters (``temperature``, ``max_tokens``,
``response_format``, ...) go to the provider as given. A result line is what the Batch API's
output file holds (``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}``); a line that failed has its ``error`` set (and ``response`` too when the provider
answered with an HTTP error). A line that is not a request becomes an error line in its place.

The results file is the job's own record, append-only and in input order: line *n* of the
results answers the *n*-th request line (of the shard). A run killed at any instant leaves whole
lines only (each is one ``write``; a torn last line, possible only if the machine went down, is
cut off); the next run checks that the lines written answer the requests as they are now (the
``custom_id``s, and each line's ``id``, which digests its request key), skips that many requests
and runs the rest under the same checkpoint name, so the answers that had finished but were held
back behind a slower earlier line come from the journal, not a new call. A line that failed is
asked again: the file is cut from it on, and the journal answers what had succeeded after it.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from aita.engine import (
    CHAT_ENDPOINT,
    ExecutionMetrics,
    LLMClient,
    LLMMessage,
    LLMTask,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    ProviderError,
    Tally,
    TaskResult,
    Usage,
    client_model,
    cost_of,
    outcome_of,
    request_key,
    run_via_batch_api,
)
from aita.errors import AitaError, RunFailed
from aita.files import json_line, safe_filename

ENDPOINT = CHAT_ENDPOINT
#: What a request line may say beside its request parameters.
_LINE_FIELDS = frozenset({"custom_id", "method", "url", "body", "messages", "prompt"})
_ROLES = frozenset({"system", "developer", "user", "assistant"})


class InvalidRequestLine(AitaError):
    """A line of the requests file that is not a request; its message names the line."""


# -- request lines --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestLine:
    """One non-blank line of a requests file: its request, or why it is none."""

    number: int
    custom_id: str | None
    messages: list[LLMMessage] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    #: what ``--shard`` hashes: the ``custom_id``, or the line itself when it has none
    shard_key: str = ""


def read_request_lines(path: Path, default_model: str | None = None) -> Iterator[RequestLine]:
    """The requests of ``path`` one by one (blank lines skipped), never all in memory."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as error:
        raise AitaError(f"{path}: cannot read ({error.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield parse_request_line(raw, number, default_model)


def parse_request_line(raw: bytes, number: int, default_model: str | None = None) -> RequestLine:
    """A line as a request; a line that is none carries its ``problem`` (it never raises)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        reason = str(error).split(":")[0]
        return _invalid(number, None, f"not JSON ({reason})", raw)
    if not isinstance(data, dict):
        return _invalid(number, None, "not a JSON object", raw)
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _invalid(number, None, "no custom_id (a non-empty string)", raw)
    try:
        messages, params = _request_of(data)
    except InvalidRequestLine as problem:
        return _invalid(number, custom_id, str(problem), raw)
    if default_model and not params.get("model"):
        params["model"] = default_model
    return RequestLine(number, custom_id, messages, params, None, custom_id)


def _invalid(number: int, custom_id: str | None, problem: str, raw: bytes) -> RequestLine:
    key = custom_id if custom_id is not None else raw.strip().decode("utf-8", "replace")
    return RequestLine(number, custom_id, problem=problem, shard_key=key)


def _request_of(data: dict[str, Any]) -> tuple[list[LLMMessage], dict[str, Any]]:
    if "body" in data:
        if data.get("method", "POST") != "POST":
            raise InvalidRequestLine(f"method {data.get('method')!r}: only POST is supported")
        if data.get("url", ENDPOINT) != ENDPOINT:
            raise InvalidRequestLine(f"url {data.get('url')!r}: only {ENDPOINT} is supported")
        body = data["body"]
        if not isinstance(body, dict):
            raise InvalidRequestLine("body is not a JSON object")
        request = dict(body)
    else:
        request = {k: v for k, v in data.items() if k not in _LINE_FIELDS}
        if "prompt" in data:
            if "messages" in data:
                raise InvalidRequestLine("both prompt and messages: give one")
            if not isinstance(data["prompt"], str):
                raise InvalidRequestLine("prompt is not a string")
            request["messages"] = [{"role": "user", "content": data["prompt"]}]
        elif "messages" in data:
            request["messages"] = data["messages"]
    if "messages" not in request:
        raise InvalidRequestLine("no messages (or prompt)")
    messages = _messages_of(request.pop("messages"))
    if "model" in request and (not isinstance(request["model"], str) or not request["model"]):
        raise InvalidRequestLine("model is not a non-empty string")
    if request.get("stream"):
        raise InvalidRequestLine("stream: a batch takes whole answers")
    if request.get("n", 1) != 1:
        raise InvalidRequestLine("n: aita keeps one answer per request")
    for cap in ("max_tokens", "max_completion_tokens"):
        value = request.get(cap)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequestLine(f"{cap} is not a whole number")
    return messages, request


def _messages_of(value: Any) -> list[LLMMessage]:
    if not isinstance(value, list) or not value:
        raise InvalidRequestLine("messages is not a non-empty list")
    messages = []
    for n, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            raise InvalidRequestLine(f"message {n} is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise InvalidRequestLine(f"message {n}: role {role!r} is not one of {sorted(_ROLES)}")
        if not isinstance(content, str) and not (
            isinstance(content, list) and all(isinstance(part, dict) for part in content)
        ):
            raise InvalidRequestLine(f"message {n}: content is neither text nor a list of parts")
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise InvalidRequestLine(f"message {n}: aita cannot pass on {', '.join(extra)}")
        messages.append(LLMMessage(role=role, content=content))
    return messages


class RequestTask(LLMTask):
    """One request line as a task: its messages, and its parameters passed through as given.
    The result is the answer's text."""

    def __init__(self, task_id: str, messages: list[LLMMessage], params: dict[str, Any]) -> None:
        self._task_id = task_id
        self.messages = messages
        self.params = params

    @property
    def task_id(self) -> str:
        return self._task_id

    def build_messages(self) -> list[LLMMessage]:
        return list(self.messages)

    def get_llm_params(self) -> dict[str, Any]:
        return dict(self.params)


class InvalidLineTask(LLMTask):
    """A line that is not a request: it fails when run, with the reason, without a call."""

    def __init__(self, task_id: str, problem: str) -> None:
        self._task_id = task_id
        self.problem = problem

    @property
    def task_id(self) -> str:
        return self._task_id

    def build_messages(self) -> list[LLMMessage]:
        raise InvalidRequestLine(self.problem)


class TaskIds:
    """Task ids for request lines: the ``custom_id``, unless that id is still in use by a line
    not yet answered (``custom_id``s should be unique, and the Batch API requires it; a repeat
    is still answered, at its own place). ``remember`` ids are kept (None: all)."""

    def __init__(self, remember: int | None) -> None:
        self._recent: deque[str] = deque()
        self._in_use: set[str] = set()
        self._remember = remember

    def of(self, line: RequestLine) -> str:
        base = line.custom_id if line.problem is None and line.custom_id else None
        task_id = base or f"line {line.number} (not a request)"
        while task_id in self._in_use:
            task_id = f"{task_id} (line {line.number})"
        self._recent.append(task_id)
        self._in_use.add(task_id)
        if self._remember is not None and len(self._recent) > self._remember:
            self._in_use.discard(self._recent.popleft())
        return task_id


def task_of(line: RequestLine, task_id: str, source: Path) -> LLMTask:
    if line.problem is not None:
        return InvalidLineTask(task_id, f"{source} line {line.number}: {line.problem}")
    return RequestTask(task_id, line.messages, line.params)


# -- result lines ---------------------------------------------------------------------------------


def _digest(custom_id: str | None, key: str) -> str:
    """A result line's ids: its ``custom_id`` and what its request asked (the request key), so a
    resume can tell a line that answers the request as it is now from one that answered it
    before it changed."""
    return hashlib.sha256(f"{custom_id}\0{key}".encode()).hexdigest()[:24]


def line_key(line: RequestLine, model: str) -> str | None:
    """The request key the engine gives this line's call (None for a line that is no request)."""
    if line.problem is not None:
        return None
    task = RequestTask(line.custom_id or "", line.messages, line.params)
    return request_key(model, task.build_messages(), task.request_params(), task.version)


def result_line(result: TaskResult, custom_id: str | None, simulated: bool) -> bytes:
    """The Batch API output line for one result (one JSON line, newline included)."""
    digest = _digest(custom_id, result.request_key or result.task_id)
    line: dict[str, Any] = {"id": f"batch_req_{digest}", "custom_id": custom_id}
    if result.success:
        line["response"] = {
            "status_code": 200,
            "request_id": f"req_{digest}",
            "body": {
                "id": f"chatcmpl-{digest}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": result.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.raw_response},
                        "finish_reason": result.finish_reason or "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "total_tokens": result.tokens,
                },
            },
        }
        line["error"] = None
    else:
        failure = result.exception
        status = failure.status_code if isinstance(failure, ProviderError) else None
        code = _snake(result.error_type or "error")
        message = result.error or "failed"
        line["response"] = (
            {
                "status_code": status,
                "request_id": f"req_{digest}",
                "body": {"error": {"message": message, "type": code, "code": code}},
            }
            if status is not None
            else None
        )
        line["error"] = {"code": code, "message": message}
    if simulated or result.simulated:
        line["simulated"] = True
    return json_line(line)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass
class WrittenLine:
    custom_id: str | None
    failed: bool
    simulated: bool
    #: the line's ``id`` (``batch_req_`` and its digest)
    id: str | None = None
    #: its length in bytes, newline included
    size: int = 0


class ResultsFile:
    """The results file, locked against a second writer: whole lines are appended, each with
    one ``write``; what is there is read back to resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as error:
            raise AitaError(f"{path}: cannot write ({error.strerror})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise AitaError(f"{path}: another aita process is writing it") from None
        self._cut_torn_line()

    def _cut_torn_line(self) -> None:
        size = os.fstat(self._fd).st_size
        end = size
        while end > 0:  # back to the last newline
            start = max(0, end - 65536)
            chunk = os.pread(self._fd, end - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            os.ftruncate(self._fd, end)

    def written(self) -> Iterator[WrittenLine]:
        """The lines already there, in order; a line that is not a result line raises."""
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    data = orjson.loads(raw)
                    custom_id = data["custom_id"]
                    if custom_id is not None and not isinstance(custom_id, str):
                        raise TypeError
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    raise AitaError(
                        f"{self.path} line {number} is not a result line: not an output of "
                        "aita batch run (write to another file)"
                    ) from None
                failed = data.get("error") is not None
                line_id = data.get("id")
                yield WrittenLine(
                    custom_id,
                    failed,
                    bool(data.get("simulated")),
                    line_id if isinstance(line_id, str) else None,
                    len(raw),
                )

    def append(self, line: bytes) -> None:
        """One result line; a file that cannot take it stops the run (``RunFailed``): a torn
        line is cut by the next run, which asks that request again."""
        try:
            os.write(self._fd, line)
        except OSError as error:
            raise RunFailed(
                f"{self.path}: cannot write ({error.strerror or error}); the lines written "
                "before resume"
            ) from error

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            os.fsync(fd)
        except OSError as error:
            raise RunFailed(f"{self.path}: cannot write ({error.strerror or error})") from error
        finally:
            os.close(fd)  # releases the lock

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- shards ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count``: the request lines whose ``custom_id`` hashes there. Stable
    whatever the lines' order or the file's length, so N machines each run one part."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if match is None or not 0 <= int(match[1]) < int(match[2]):
            raise ValueError(f"expected I/N with 0 <= I < N, got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def holds(self, line: RequestLine) -> bool:
        digest = hashlib.sha256(line.shard_key.encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# -- the job --------------------------------------------------------------------------------------


@dataclass
class BatchFileSummary:
    """What a run did, and what the results file holds now."""

    #: lines in the results file before this run that it keeps
    earlier: int = 0
    written: int = 0
    failures: list[tuple[RequestLine, TaskResult]] = field(default_factory=list)
    failed: int = 0
    #: how this run's lines ended, in the words of every other command (a cut-off answer is
    #: flagged, one the journal held is reused)
    outcomes: Tally = field(default_factory=Tally)
    metrics: ExecutionMetrics | None = None

    @property
    def total(self) -> int:
        return self.earlier + self.written

    @property
    def tally(self) -> Tally:
        """Every line of the results file: this run's, and those written by earlier runs."""
        tally = Tally(self.outcomes)
        tally["reused"] += self.earlier
        return tally


class BatchFileJob:
    """One requests file run into one results file (optionally one shard of it)."""

    #: failed lines kept for the report; the rest are counted
    KEEP_FAILURES = 20

    def __init__(
        self,
        requests: Path,
        results: Path,
        *,
        shard: Shard | None = None,
        default_model: str | None = None,
        dry_run: bool = False,
        warn: Callable[[str], object] = lambda line: None,
    ) -> None:
        if requests.resolve() == results.resolve():
            raise AitaError(f"{results}: the results would overwrite the requests")
        if not requests.is_file():
            why = "not a file" if requests.exists() else "file not found"
            raise AitaError(f"{requests}: {why}")
        self.requests = requests
        self.results = results
        self.shard = shard
        self.default_model = default_model
        self.dry_run = dry_run
        self.warn = warn
        self.summary = BatchFileSummary()
        self._invalid_seen = 0

    @property
    def checkpoint_name(self) -> str:
        return checkpoint_name_for(self.results, self.shard, self.dry_run)

    def lines(self) -> Iterator[RequestLine]:
        """The request lines of this job (its shard), read one by one."""
        for line in read_request_lines(self.requests, self.default_model):
            if self.shard is not None and not self.shard.holds(line):
                continue
            yield line

    def remaining(self, results: ResultsFile, model: str) -> Iterator[RequestLine]:
        """The request lines the results file does not answer yet. The lines it does answer
        are checked first, at once: they must answer those requests as they are now, asked of
        ``model`` when a line names none (else the input changed, and the run is refused before
        anything starts: an answer to another question is never passed off as this one's).
        From the first line that failed on, the file is cut and the requests asked again: the
        checkpoint journal answers those that had succeeded, with no call."""
        lines = self.lines()
        summary = self.summary
        retry_from: tuple[int, int] | None = None  # the first failed line: its index, its offset
        offset = 0
        for number, written in enumerate(results.written(), start=1):
            if written.failed:
                retry_from = (number - 1, offset)
                break
            line = next(lines, None)
            if line is None:
                raise AitaError(
                    f"{self.results} has more lines than {self.requests} has requests"
                    f"{self._of_shard()}: the requests changed since it was written (write "
                    "the results to another file)"
                )
            if written.custom_id != line.custom_id:
                raise AitaError(
                    f"{self.results} line {number} answers custom_id {written.custom_id!r}, but "
                    f"request {number}{self._of_shard()} ({self.requests} line {line.number}) "
                    f"is {line.custom_id!r}: the requests changed since it was written (write "
                    "the results to another file)"
                )
            if written.simulated != self.dry_run:
                made_by = (
                    "simulated answers (of a dry run or a simulator)"
                    if written.simulated
                    else "answers of real calls"
                )
                raise AitaError(
                    f"{self.results} holds {made_by}; "
                    f"{'a dry run' if self.dry_run else 'a real run'} does not continue it "
                    "(write the results to another file)"
                )
            key = line_key(line, model)
            if key is not None and written.id != f"batch_req_{_digest(line.custom_id, key)}":
                raise AitaError(
                    f"{self.results} line {number} answers custom_id {line.custom_id!r} as it "
                    f"was asked before: request {number}{self._of_shard()} ({self.requests} line "
                    f"{line.number}) or the model changed since (write the results to another "
                    "file)"
                )
            offset += written.size
            summary.earlier += 1
        if retry_from is not None:
            index, size = retry_from
            results.truncate(size)
            lines = itertools.islice(self.lines(), index, None)
        return self._reported(lines)

    def _reported(self, lines: Iterable[RequestLine]) -> Iterator[RequestLine]:
        for line in lines:
            if line.problem is not None:
                self._invalid_seen += 1
                if self._invalid_seen <= self.KEEP_FAILURES:
                    self.warn(f"{self.requests} line {line.number}: {line.problem}")
                elif self._invalid_seen == self.KEEP_FAILURES + 1:
                    self.warn(f"{self.requests}: more lines that are not requests follow")
            yield line

    def _of_shard(self) -> str:
        return f" in shard {self.shard}" if self.shard is not None else ""

    def _written(self, results: ResultsFile, line: RequestLine, result: TaskResult) -> None:
        results.append(result_line(result, line.custom_id, self.dry_run))
        self.summary.written += 1
        self.summary.outcomes[outcome_of(result)] += 1
        if not result.success:
            self.summary.failed += 1
            if len(self.summary.failures) < self.KEEP_FAILURES:
                self.summary.failures.append((line, result))

    # -- running -------------------------------------------------------------------------------

    def run_live(self, executor: ParallelLLMExecutor) -> BatchFileSummary:
        """Every remaining request as a call of its own, through ``execute_stream``: memory
        stays bounded by its window, results are written in input order as they are ready."""
        window = 4 * executor.max_workers
        with ResultsFile(self.results) as results:
            model = client_model(executor.llm_client)
            remaining = self.remaining(results, model)  # checked before any work starts
            taken: deque[RequestLine] = deque()
            ids = TaskIds(remember=window)

            def tasks() -> Iterator[LLMTask]:
                for line in remaining:
                    taken.append(line)
                    yield task_of(line, ids.of(line), self.requests)

            stream = executor.execute_stream(
                tasks(), checkpoint_name=self.checkpoint_name, window=window
            )
            try:
                for result in stream:
                    self._written(results, taken.popleft(), result)
            finally:
                stream.close()
                self.summary.metrics = stream.metrics
        return self.summary

    def run_batch_api(self, client: OpenAICompatibleClient, **options: Any) -> BatchFileSummary:
        """The remaining requests through the provider's Batch API (``run_via_batch_api``;
        ``options`` go to it); results written in input order as the prefix completes."""
        with ResultsFile(self.results) as results:
            lines = list(self.remaining(results, client_model(client)))
            ids = TaskIds(remember=None)
            tasks = [task_of(line, ids.of(line), self.requests) for line in lines]
            place = {task.task_id: n for n, task in enumerate(tasks)}
            ready: dict[int, TaskResult] = {}
            head = 0

            def done(result: TaskResult) -> None:
                nonlocal head
                ready[place[result.task_id]] = result
                while head in ready:
                    self._written(results, lines[head], ready.pop(head))
                    head += 1

            batch = run_via_batch_api(
                client, tasks, checkpoint_name=self.checkpoint_name, on_task_complete=done,
                **options,
            )  # fmt: skip
            self.summary.metrics = batch.metrics
        return self.summary

    def estimate(self, client: LLMClient, discount: float = 1.0) -> tuple[int, float | None]:
        """The calls the remaining requests make and what one attempt of each costs (None when
        a price is unknown), read from the files without writing anything."""
        calls, total, unknown = 0, 0.0, False
        skip = 0
        for raw in _written_lines(self.results):
            try:
                failed = orjson.loads(raw).get("error") is not None
            except (orjson.JSONDecodeError, AttributeError):
                failed = True  # not a result line: the run refuses the file, no call is made
            if failed:
                break  # a failed line: it and the lines after it are asked again
            skip += 1
        model = client_model(client)
        for n, line in enumerate(self.lines()):
            if n < skip or line.problem is not None:
                continue
            calls += 1
            task = RequestTask(line.custom_id or "", line.messages, line.params)
            answer = line.params.get("max_tokens") or task.expected_output_tokens
            usage = Usage(task.estimated_prompt_tokens(), min(int(answer), 4096))
            cost = cost_of(line.params.get("model") or model, usage)
            unknown = unknown or cost is None
            total += (cost or 0.0) * discount
        return calls, None if unknown else total


def checkpoint_name_for(results: Path, shard: Shard | None, dry_run: bool) -> str:
    """The checkpoint of the job writing ``results``, named after its path and shard: every run
    writing it continues one journal (and one Batch API state); a dry run's is apart."""
    where = f"{results.resolve()}|{shard or ''}"
    digest = hashlib.sha256(where.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    stem = safe_filename(results.stem, limit=60, empty="results")
    return f"{stem}-{digest}{'__dry-run' if dry_run else ''}__batch"


def _written_lines(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with open(path, "rb") as handle:
        yield from (line for line in handle if line.endswith(b"\n"))
