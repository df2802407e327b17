"""Tasks through a provider's Batch API (OpenAI's Files and Batches endpoints), at half price.

    result = run_via_batch_api(client, tasks, checkpoint_name="nightly")

The tasks' requests are written as Batch API input lines (``custom_id`` is the task id), split
into files the provider accepts (50,000 requests and 200 MB each), uploaded and submitted; the
batches are polled with a progress bar, and their output and error files read back item by item,
matched by ``custom_id`` and checked against the request key the item was sent with. Each answer
goes through the task's own ``parse_response`` into the checkpoint journal, in the same records
``execute_batch`` writes, so either can resume the other. Items that failed, expired, went
unanswered or did not parse are submitted again in a further round, up to ``max_rounds``.

Killed at any instant, a run costs nothing twice: the batches it submitted are in a small state
file beside the journal (``<checkpoint dir>/<name>.batch-api.json``, written atomically before
and after each submission), and the next run collects them instead of submitting again. A batch
created in the instant between the provider's answer and that write is found again by its input
file in the provider's list of batches. Answers already in the journal are reused as by
``execute_batch``: same task id, same request key.

Costs are the batch price: the provider's reported cost when it gives one, else the price
table's (``cost_of``) times ``BATCH_DISCOUNT``. Every paid item is a line in the spend ledger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import openai
import orjson
from pydantic import BaseModel, ValidationError
from tqdm.auto import tqdm

from aita.engine._client import SIMULATED_HEADER
from aita.engine._executor import (
    UNSET,
    BatchInterrupted,
    ExecutorSettings,
    _Unset,
    default_checkpoint_name,
)
from aita.engine._journal import Checkpoint, CheckpointManager
from aita.engine._keys import client_model
from aita.engine._ledger import SpendLedger
from aita.engine._lifecycle import Lifecycle, Prepared, Settlement
from aita.engine._openai import (
    ENDPOINT,
    OpenAICompatibleClient,
    error_for_status,
    provider_text,
    read_completion,
    translate_error,
)
from aita.engine._progress import BatchProgress
from aita.engine._results import BatchResult, TaskResult, batch_metrics
from aita.engine._retry import RetryPolicy
from aita.engine._tasks import LLMTask
from aita.engine._telemetry import Telemetry
from aita.errors import (
    BadRequest,
    BatchOverdue,
    ConfigError,
    InvalidResponse,
    ModelNotFound,
    ProviderError,
    ProviderOutage,
    ProviderUnavailable,
    ProviderUnreachable,
    RateLimited,
    RunFailed,
    TaskGraphError,
)
from aita.files import json_line, private_folder, write_bytes_atomic, write_json_atomic

log = logging.getLogger("aita.batch_api")

#: What a batch costs next to the same calls made one by one.
BATCH_DISCOUNT = 0.5
#: OpenAI's limits for one batch input file.
MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 1024 * 1024
#: Batch statuses after which nothing changes.
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
#: Polling starts this often (seconds) and slows down to ``POLL_MAX``.
POLL_FIRST, POLL_MAX = 1.0, 60.0
#: The least time an upload or a download may take (seconds).
TRANSFER_SECONDS = 600.0
#: How far past its completion window an unfinished batch is waited for, as a share of the
#: window: a provider expires a late batch itself; one still running after this never will.
OVERDUE_SHARE = 0.1

T = TypeVar("T")


class Clock(Protocol):
    """What the job reads time from and sleeps with: the ``time`` module, or a test's fake."""

    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def sleep(self, seconds: float, /) -> None: ...


def run_via_batch_api(
    client: OpenAICompatibleClient,
    tasks: Iterable[LLMTask],
    checkpoint_name: str | None = None,
    resume_from_checkpoint: bool = True,
    on_task_complete: Callable[[TaskResult], object] | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    show_progress: bool | None = None,
    spend_ledger: str | Path | _Unset | None = UNSET,
    prices: Mapping[str, tuple[float, float]] | None = None,
    max_rounds: int = 5,
    poll_interval: float | None = None,
    max_requests_per_file: int = MAX_REQUESTS_PER_FILE,
    max_bytes_per_file: int = MAX_BYTES_PER_FILE,
    completion_window: str = "24h",
    outage_budget: float | None = None,
    telemetry: Telemetry | None = None,
    clock: Clock = time,
) -> BatchResult:
    """Run ``tasks`` through the provider's Batch API; ``task_results`` in input order.

    ``client`` is an ``OpenAICompatibleClient`` (``create_openrouter_client``) whose server
    has the Files and Batches endpoints (OpenAI has; OpenRouter has not). Tasks must be
    independent and their ids unique. The checkpoint journal of ``checkpoint_name`` (default:
    named after the task classes) answers tasks it already holds; the batches a killed run
    submitted are collected, not submitted again. ``resume_from_checkpoint=False`` starts a new
    journal and cancels the batches an earlier run left open.

    ``poll_interval`` (seconds; default: from 1 s, slowing to 60 s) is how often the batches
    are looked at; ``max_rounds`` bounds how often failed items are submitted. A provider
    unreachable for longer than ``outage_budget`` seconds (``AITA_OUTAGE_BUDGET``) while the
    batches are polled raises ``ProviderOutage``; the batches keep running and a later run
    collects them. Ctrl-C raises ``BatchInterrupted`` the same way. Checkpointing is always
    on: it is what makes a batch job resumable. ``telemetry``: as ``ParallelLLMExecutor``'s,
    a span per batch and per task (no attempt spans: the provider answers items in bulk).
    ``clock``: where polling reads the time and sleeps (tests pass a fake one).
    """
    task_list = list(tasks)
    settings = ExecutorSettings.resolve(
        enable_checkpointing=True,
        checkpoint_dir=checkpoint_dir,
        show_progress=show_progress,
        spend_ledger=spend_ledger,
        outage_budget=outage_budget,
        redis_url=None,
    )
    name = checkpoint_name or default_checkpoint_name(task_list)
    job = _BatchJob(
        client,
        name,
        settings,
        prices=prices,
        max_rounds=max(1, max_rounds),
        poll_interval=poll_interval,
        limits=(max(1, max_requests_per_file), max(1, max_bytes_per_file)),
        completion_window=completion_window,
        clock=clock,
    )
    job.life.trace = (telemetry or Telemetry()).batch(name, len(task_list), client, None)
    with job.life.trace:
        return job.run(task_list, resume_from_checkpoint, on_task_complete)


def cancel_batch_api(
    client: OpenAICompatibleClient, checkpoint_name: str, checkpoint_dir: str | Path | None = None
) -> list[str]:
    """Cancel the batches that runs of ``checkpoint_name`` submitted and did not collect; their
    ids. The next run collects what the provider answered before it stopped (that was paid
    for) and submits the rest again. A provider that is down raises ``ProviderUnavailable``
    (or ``RateLimited``) and nothing is forgotten: cancel again later."""
    folder = ExecutorSettings.resolve(checkpoint_dir=checkpoint_dir).checkpoint_dir
    remote = _Remote(client, checkpoint_name, folder)
    return remote._cancel(remote._load_state())


# -- the state file -----------------------------------------------------------------------------


class _Submitted(BaseModel):
    """A batch the provider accepted; ``keys`` names the file of (task id, request key) in
    the order of its input lines."""

    id: str
    input_file_id: str
    keys: str
    requests: int
    collected: bool = False


class _Uploaded(BaseModel):
    """An input file uploaded whose batch may or may not have been created (killed between)."""

    input_file_id: str
    keys: str
    requests: int
    uploaded_at: float


class _State(BaseModel):
    aita_batch_api: Literal[1] = 1
    name: str
    base_url: str
    batches: list[_Submitted] = []
    uploads: list[_Uploaded] = []

    @property
    def open_batches(self) -> list[_Submitted]:
        return [b for b in self.batches if not b.collected]


@dataclass
class _Pending:
    """A task still waiting for its answer: its place, its prepared request (which adds up
    what its rounds cost) and its input line; ``error``: why its last round did not end it."""

    index: int
    step: Prepared
    line: bytes
    error: BaseException | None = None

    @property
    def task(self) -> LLMTask:
        return self.step.task

    @property
    def key(self) -> str:
        return self.step.key


class _Remote:
    """A checkpoint's batches at the provider: the state file that records them, and the
    control calls on them (all cancelling needs)."""

    def __init__(self, client: OpenAICompatibleClient, name: str, checkpoint_dir: Path) -> None:
        sdk = getattr(client, "sdk", None)  # the client's own SDK instance and connections
        if not isinstance(sdk, openai.OpenAI):
            raise ConfigError(
                f"the Batch API needs an OpenAI-compatible client (create_openrouter_client), "
                f"not {type(client).__name__}"
            )
        self.client = client
        self.base_url = client.base_url
        # The SDK retries these control calls itself: they are not attempts of a task.
        self.sdk = sdk.with_options(max_retries=4)
        self.name = name
        self.manager = CheckpointManager(checkpoint_dir)
        stem = self.manager.safe_name(name)
        self.state_path = checkpoint_dir / f"{stem}.batch-api.json"
        self.folder = checkpoint_dir / f"{stem}.batch-api"
        self.redact: Callable[[str], str] = client.redact

    def _load_state(self) -> _State | None:
        if not self.state_path.exists():
            return None
        try:
            state = _State.model_validate_json(self.state_path.read_bytes())
        except (OSError, ValidationError) as error:
            log.warning("%s is unreadable (%s); starting without it", self.state_path, error)
            return None
        if state.base_url != self.base_url:
            log.warning(
                "%s holds batches of %s, not %s; starting without them",
                self.state_path,
                state.base_url,
                self.base_url,
            )
            return None
        return state

    def _save(self, state: _State) -> None:
        write_json_atomic(self.state_path, state.model_dump())

    def _find_batch_of(self, input_file_id: str, since: float) -> str | None:
        page = self._call(lambda: self.sdk.batches.list(limit=100), "list batches")
        for batch in page:  # newest first; the SDK fetches further pages as needed
            if batch.input_file_id == input_file_id:
                return batch.id
            if batch.created_at < since - 300:
                return None
        return None

    def _cancel(self, state: _State | None) -> list[str]:
        """Cancel the open batches of ``state`` (those created from its uploads included); the
        ids cancelled. A batch the provider refuses to cancel is skipped; a provider that is
        down raises (``ProviderUnavailable``), the state kept for a later try."""
        if state is None:
            return []
        ids = [b.id for b in state.open_batches]
        ids += [
            found
            for upload in state.uploads
            if (found := self._find_batch_of(upload.input_file_id, upload.uploaded_at))
        ]
        cancelled = []
        for batch_id in ids:
            try:
                self._call(partial(self.sdk.batches.cancel, batch_id), "cancel a batch")
            except (ProviderUnavailable, RateLimited):
                raise  # the provider is down: nothing else would be cancelled either
            except ProviderError as error:  # this one refused (finished, unknown): the others
                log.warning("could not cancel batch %s: %s", batch_id, error)
                continue
            cancelled.append(batch_id)
        return cancelled

    def _timeout(self) -> float:
        return self.client.timeout

    def _call(self, call: Callable[[], T], what: str) -> T:
        try:
            return call()
        except openai.APIError as error:
            raise self._translated(error, what) from None

    def _translated(self, error: openai.APIError, what: str) -> ProviderError:
        return translate_error(error, self.base_url, self._timeout(), self.redact, what)


class _BatchJob(_Remote):
    def __init__(
        self,
        client: OpenAICompatibleClient,
        name: str,
        settings: ExecutorSettings,
        *,
        prices: Mapping[str, tuple[float, float]] | None,
        max_rounds: int,
        poll_interval: float | None,
        limits: tuple[int, int],
        completion_window: str,
        clock: Clock = time,
    ) -> None:
        super().__init__(client, name, settings.checkpoint_dir)
        self.model = client_model(client)
        self.poll_sdk = self.sdk.with_options(max_retries=0)
        #: uploads and downloads of files up to 200 MB: minutes, not a call's timeout
        self.transfer_sdk = self.sdk.with_options(timeout=max(TRANSFER_SECONDS, self._timeout()))
        self.settings = settings
        self.max_rounds = max_rounds
        self.poll_interval = poll_interval
        self.max_requests, self.max_bytes = limits
        self.completion_window = completion_window
        self.clock = clock
        self.ledger = SpendLedger(settings.spend_ledger) if settings.spend_ledger else None
        self.progress = BatchProgress(None, 0, show=False)  # the counters; the bar is polling's
        self.counts = self.progress.counts
        self.pending: dict[str, _Pending] = {}
        self.results: list[TaskResult | None] = []
        self.started = time.perf_counter()
        self.life = Lifecycle(
            name=name,
            model=self.model,
            progress=self.progress,
            retry_policy=RetryPolicy(max_retries=max_rounds - 1),  # the last round is final
            ledger=self.ledger,
            prices=prices,
            redact=self.redact,
            discount=BATCH_DISCOUNT,
        )

    # -- the job -------------------------------------------------------------------------------

    def run(
        self,
        tasks: list[LLMTask],
        resume: bool,
        on_task_complete: Callable[[TaskResult], object] | None,
    ) -> BatchResult:
        _check_independent(tasks)
        self.results = [None] * len(tasks)
        state = self._load_state()
        if not resume:  # what earlier runs left running is not wanted: no need to pay for it
            self._cancel(state)
            self.state_path.unlink(missing_ok=True)
            state = None
        state = state or _State(name=self.name, base_url=self.base_url)
        checkpoint = self.manager.open_for_batch(self.name, resume)
        journal = self.manager.start_journal(checkpoint, self.settings.checkpoint_interval)
        journal.start_run(len(tasks))
        self.life.lookup, self.life.journal = checkpoint, journal
        self.life.on_task_complete = on_task_complete
        try:
            self._look_back(tasks, checkpoint)
            self._adopt_uploads(state)
            self._rounds(state)
            self._forget_collected(state)
        except ProviderUnreachable as unreachable:  # a control call, after the SDK's retries
            raise RunFailed(
                f"{unreachable.message}; what was submitted is collected by the next run"
            ) from None
        except KeyboardInterrupt:
            running = len(state.open_batches)
            where = f"; {running} batch(es) keep running at the provider" if running else ""
            raise BatchInterrupted(
                f"interrupted after {sum(r is not None for r in self.results)}/{len(tasks)} "
                f"tasks{where}; run again with checkpoint_name={self.name!r} to collect them "
                "(nothing is submitted twice)",
                self.name,
                checkpoint.path,
            ) from None
        finally:
            journal.close()
            if self.ledger is not None:
                self.ledger.close()
        for pending in list(self.pending.values()):
            error = pending.error or ProviderUnavailable("not answered")
            self._ended(pending, self.life.give_up(pending.step, error))
        final = [r for r in self.results if r is not None]
        metrics = batch_metrics(len(tasks), final, self.counts, time.perf_counter() - self.started)
        return BatchResult(final, metrics, checkpoint.path)

    def _rounds(self, state: _State) -> None:
        """Submit what needs an answer and wait for it, round after round. The first round
        also waits for the batches a killed run left open (what they cover is not submitted
        again)."""
        carried = [b for b in state.open_batches if self._covered_by(b)]
        rounds = 0
        while True:
            covered = {task_id for b in carried for task_id in self._covered_by(b)}
            todo = [p for p in self.pending.values() if p.task.task_id not in covered]
            if rounds >= self.max_rounds:
                todo = []
            if not todo and not carried:
                return
            rounds += bool(todo)
            self._wait_for(state, carried + self._submit(state, todo))
            carried = []

    def _covered_by(self, batch: _Submitted | _Uploaded) -> set[str]:
        """The pending tasks a batch (or an uploaded file) asks exactly what they ask now."""
        return {
            task_id
            for task_id, key in self._keys_of(batch).items()
            if (pending := self.pending.get(task_id)) is not None and pending.key == key
        }

    def _forget_collected(self, state: _State) -> None:
        """Collected batches live on in the journal: their keys files go (with those of
        uploads a killed run never finished: none is pending now), and the state file once
        nothing is open."""
        state.batches = state.open_batches
        needed = {b.keys for b in state.batches}
        for path in self.folder.glob("*.jsonl"):
            if path.name not in needed:
                path.unlink()
        if needed:
            self._save(state)
            return
        self.state_path.unlink(missing_ok=True)
        if self.folder.is_dir():
            self.folder.rmdir()

    def _look_back(self, tasks: list[LLMTask], checkpoint: Checkpoint) -> None:
        """Answer what the journal holds; every other task gets its request line, ready."""
        for index, task in enumerate(tasks):
            step = self.life.prepare(task)
            if isinstance(step, TaskResult):  # a bug in the task, not the provider: no retry
                self._end(index, step)
                continue
            earlier = self.life.look_back(step)
            if earlier is not None:
                self._end(index, earlier)
                continue
            try:
                line = json_line(step.line())
            except Exception as error:  # a body no JSON line can hold
                self._end(index, self.life.failed(task, error, step))
                continue
            if len(line) > self.max_bytes:
                too_big = BadRequest(f"the request is {len(line)} bytes, over a file's limit")
                self._end(index, self.life.failed(task, too_big, step))
            else:
                self.pending[task.task_id] = _Pending(index, step, line)

    # -- submitting ----------------------------------------------------------------------------

    def _submit(self, state: _State, pending: list[_Pending]) -> list[_Submitted]:
        """Write, upload and create batches of at most ``max_requests`` lines and ``max_bytes``;
        each is in the state file before the next starts."""
        return [self._submit_one(state, chunk) for chunk in self._chunks(pending)]

    def _chunks(self, pending: list[_Pending]) -> Iterator[list[_Pending]]:
        chunk: list[_Pending] = []
        size = 0
        for p in pending:
            if chunk and (len(chunk) >= self.max_requests or size + len(p.line) > self.max_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append(p)
            size += len(p.line)
        if chunk:
            yield chunk

    def _submit_one(self, state: _State, chunk: list[_Pending]) -> _Submitted:
        private_folder(self.folder)
        stem = f"{time.strftime('%Y%m%d_%H%M%S')}_{len(state.batches):05d}"  # no upload pending
        keys = f"{stem}.keys.jsonl"
        write_bytes_atomic(
            self.folder / keys, b"".join(json_line([p.task.task_id, p.key]) for p in chunk)
        )
        requests = self.folder / f"{stem}.requests.jsonl"
        write_bytes_atomic(requests, b"".join(p.line for p in chunk))
        try:  # from a path, the SDK reads the file whole: a retried upload sends all of it
            uploaded = self._call(
                lambda: self.transfer_sdk.files.create(file=requests, purpose="batch"),
                "upload a batch file",
            )
        except ModelNotFound as error:
            raise ConfigError(
                f"{self.base_url} has no Batch API ({error}); OpenAI has one "
                "(AITA_BASE_URL=https://api.openai.com/v1)"
            ) from None
        finally:
            requests.unlink()
        upload = _Uploaded(
            input_file_id=uploaded.id, keys=keys, requests=len(chunk), uploaded_at=self.clock.time()
        )
        state.uploads.append(upload)
        self._save(state)
        return self._create(state, upload)

    def _create(self, state: _State, upload: _Uploaded) -> _Submitted:
        batch = self._call(
            lambda: self.sdk.batches.create(
                input_file_id=upload.input_file_id,
                endpoint=ENDPOINT,  # type: ignore[arg-type]
                completion_window=self.completion_window,  # type: ignore[arg-type]
                metadata={"aita_checkpoint": self.name[:512]},
            ),
            "create a batch",
        )
        return self._record(state, upload, batch.id)

    def _record(self, state: _State, upload: _Uploaded, batch_id: str) -> _Submitted:
        submitted = _Submitted(
            id=batch_id,
            input_file_id=upload.input_file_id,
            keys=upload.keys,
            requests=upload.requests,
        )
        state.uploads.remove(upload)
        state.batches.append(submitted)
        self._save(state)
        log.info("submitted batch %s (%d requests)", batch_id, upload.requests)
        return submitted

    def _adopt_uploads(self, state: _State) -> None:
        """Files a killed run uploaded: the batch it may have created is found by its input
        file and adopted; else it is created now, if it still asks something needed."""
        for upload in list(state.uploads):
            existing = self._find_batch_of(upload.input_file_id, upload.uploaded_at)
            if existing is not None:
                self._record(state, upload, existing)
                continue
            if self._covered_by(upload):
                try:
                    self._create(state, upload)
                    continue
                except BadRequest as refused:  # the file is gone at the provider
                    log.warning("%s: %s; submitting again", upload.input_file_id, refused)
            state.uploads.remove(upload)
            self._save(state)

    # -- waiting and collecting ----------------------------------------------------------------

    def _wait_for(self, state: _State, batches: list[_Submitted]) -> None:
        """Poll until every batch has finished, collecting each as it does."""
        waiting = {b.id: b for b in batches}
        progress: dict[str, int] = {}
        total = sum(b.requests for b in batches)
        bar = tqdm(
            total=total,
            desc=f"⏳ Batch API: {len(batches)} batch(es)",
            unit="request",
            disable=not self.settings.show_progress,
            dynamic_ncols=True,
        )
        delay = self.poll_interval or POLL_FIRST
        unreachable_since: float | None = None
        try:
            while waiting:
                statuses: list[str] = []
                for batch in list(waiting.values()):
                    try:  # not retried by the SDK: the next poll is the retry
                        info = self._call(
                            partial(self.poll_sdk.batches.retrieve, batch.id), "poll a batch"
                        )
                    except ModelNotFound:  # gone at the provider: its items go again
                        log.warning("batch %s is gone at the provider; submitting again", batch.id)
                        self._collect(state, batch, "gone", None, None)
                        waiting.pop(batch.id)
                        continue
                    except (ProviderUnavailable, RateLimited) as error:
                        now = self.clock.monotonic()
                        if unreachable_since is None:
                            unreachable_since = now
                        if now - unreachable_since > self.settings.outage_budget:
                            raise self._outage(error, list(waiting)) from None
                        continue
                    unreachable_since = None
                    _check_not_overdue(info, self.clock.time())
                    counts = info.request_counts
                    progress[batch.id] = (counts.completed + counts.failed) if counts else 0
                    statuses.append(info.status)
                    if info.status in FINISHED:
                        why: str = info.status
                        if info.errors and info.errors.data:
                            why += ": " + "; ".join(str(e.message) for e in info.errors.data[:3])
                        self._collect(state, batch, why, info.output_file_id, info.error_file_id)
                        progress[batch.id] = batch.requests
                        waiting.pop(batch.id)
                bar.n = min(total, sum(progress.values()))  # counts are the provider's
                bar.set_postfix_str(_tally(statuses), refresh=True)
                if waiting:
                    self.clock.sleep(delay)
                    if self.poll_interval is None:
                        delay = min(POLL_MAX, delay * 1.5)
        finally:
            bar.close()

    def _outage(self, error: ProviderError, running: list[str]) -> ProviderOutage:
        return ProviderOutage(
            f"cannot poll the Batch API at {self.base_url}: no answer for over "
            f"{self.settings.outage_budget:g}s ({error}); the batch(es) {', '.join(running)} keep "
            "running at the provider: run again to collect them"
        )

    def _collect(
        self,
        state: _State,
        batch: _Submitted,
        status: str,
        output_file_id: str | None,
        error_file_id: str | None,
    ) -> None:
        """Read a finished batch's answers into results (or back into the queue)."""
        sent = self._keys_of(batch)
        seen: set[str] = set()
        for file_id in (output_file_id, error_file_id):
            if file_id:
                for item, simulated in self._items(file_id):
                    custom_id = item.get("custom_id")
                    pending = self.pending.get(custom_id) if isinstance(custom_id, str) else None
                    if pending is None or sent.get(pending.task.task_id) != pending.key:
                        continue  # answered already, no longer asked, or asked differently
                    seen.add(pending.task.task_id)
                    self._apply(pending, item, simulated)
        for task_id in sent.keys() - seen:
            pending = self.pending.get(task_id)
            if pending is not None and sent[task_id] == pending.key:
                why = provider_text(f"not answered (the batch {status})", self.redact)
                self._settled(
                    pending, self.life.settle(pending.step, error=ProviderUnavailable(why))
                )
        batch.collected = True
        self._save(state)

    def _keys_of(self, batch: _Submitted | _Uploaded) -> dict[str, str]:
        try:
            lines = (self.folder / batch.keys).read_bytes().splitlines()
            return {task_id: key for task_id, key in map(orjson.loads, lines)}
        except (OSError, ValueError) as error:
            log.warning("%s: unreadable (%s); its answers are not used", batch.keys, error)
            return {}

    def _items(self, file_id: str) -> Iterator[tuple[dict[str, Any], bool]]:
        """The lines of an output or error file, one by one, and whether the simulator made
        them."""
        try:
            with self.transfer_sdk.files.with_streaming_response.content(file_id) as response:
                simulated = response.headers.get(SIMULATED_HEADER) == "true"
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        item = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        log.warning("file %s: skipped a line that is not JSON", file_id)
                        continue
                    if isinstance(item, dict):
                        yield item, simulated
        except openai.APIError as error:
            raise self._translated(error, "download batch results") from None

    def _apply(self, pending: _Pending, item: dict[str, Any], simulated: bool) -> None:
        """One item of an output or error file, settled by the lifecycle: the task's result, or
        its error for now (asked again next round)."""
        response = item.get("response") if isinstance(item.get("response"), dict) else None
        status = response.get("status_code") if response else None
        body = response.get("body") if response else None
        if status != 200 or not isinstance(body, dict):
            error = _item_error(item, status, body, self.redact)
            self._settled(pending, self.life.settle(pending.step, error=error))
            return
        headers = {SIMULATED_HEADER: "true"} if simulated else None
        try:
            answer = read_completion(body, self.redact, pending.step.model, headers)
        except InvalidResponse as error:
            self._settled(pending, self.life.settle(pending.step, error=error))
            return
        self._settled(pending, self.life.settle(pending.step, response=answer))

    def _settled(self, pending: _Pending, settled: Settlement) -> None:
        """An item settled: the task ends, or waits for the next round."""
        if settled.result is not None:
            self._ended(pending, settled.result)
        else:
            pending.error = settled.error

    def _ended(self, pending: _Pending, result: TaskResult) -> None:
        del self.pending[pending.task.task_id]
        self._end(pending.index, result)

    def _end(self, index: int, result: TaskResult) -> None:
        self.results[index] = result
        self.life.finish(result)


def _check_independent(tasks: list[LLMTask]) -> None:
    seen: set[str] = set()
    for task in tasks:
        if task.dependencies:
            raise TaskGraphError(
                f"task {task.task_id!r} has dependencies: the Batch API runs independent tasks "
                "(use execute_batch for task graphs)"
            )
        if task.task_id in seen:
            raise TaskGraphError(f"duplicate task id: {task.task_id!r}")
        seen.add(task.task_id)


def _item_error(
    item: dict[str, Any], status: Any, body: Any, redact: Callable[[str], str]
) -> ProviderError:
    """An item the provider did not answer: its HTTP error, or the batch's (``batch_expired``:
    retried like a 5xx); the provider's text redacted and bounded as a live call's."""
    if isinstance(status, int) and status != 200:
        message = provider_text(_provider_message(body) or f"HTTP {status}", redact)
        return error_for_status(status, message, {})
    given = item.get("error")
    error: dict[str, Any] = given if isinstance(given, dict) else {}
    text = f"{error.get('code') or 'unknown'}: {error.get('message') or 'not answered'}"
    return ProviderUnavailable(provider_text(text, redact))


def _provider_message(body: object) -> str | None:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return None


def _tally(statuses: list[str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return " ".join(f"{status}={n}" for status, n in sorted(counts.items()))


def _check_not_overdue(info: Any, now: float) -> None:
    """Raise ``BatchOverdue`` for a batch unfinished a tenth of its window past ``expires_at``
    (polling it longer would go on forever)."""
    expires, created = getattr(info, "expires_at", None), getattr(info, "created_at", None)
    if info.status in FINISHED or not isinstance(expires, int | float):
        return
    window = expires - created if isinstance(created, int | float) and created < expires else 0
    late = now - expires
    if late > OVERDUE_SHARE * window:
        raise BatchOverdue(
            f"batch {info.id} is still {info.status} {_late(late)} past its completion window: "
            "the provider is not finishing it. It is kept: run again later to collect it, or "
            "cancel it (aita batch cancel)"
        )


def _late(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(1, round(seconds))} s"
