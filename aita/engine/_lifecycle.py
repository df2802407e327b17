"""One task's life, the same for every driver: prepare, look back, settle, finish.

A *driver* decides how a request is answered and how long to wait: the thread-pool workers of
``ParallelLLMExecutor`` (``_executor``), the Batch API job (``_batch_api``), an event loop. The
lifecycle does everything else, once, for all of them. Every step is a plain synchronous call
that never waits on the network and never sleeps, and none of them raises for a task's fault:
task code (``build_messages``, ``parse_response``, ``should_retry``, ``fallback``), a parameter
the request key cannot hold, a cache row that does not read, all become that task's failed
result with a one-line reason. The one exception a step raises is ``RunFailed``, from
``finish``/``record``: the journal cannot be written, and no task can be saved.

The step API (``life`` is one ``Lifecycle`` per run; ``Lifecycle``, ``Prepared`` and ``Settlement``
are exported from ``aita.engine`` for drivers written outside it)::

    step = life.prepare(task)        # Prepared (messages, params, request key, body), or the
                                     # task's failed TaskResult when it cannot build its request
    earlier = life.look_back(step)   # TaskResult answered from an earlier run (the journal,
                                     # then the response cache), or None
    # the driver waits (outage gate, limiter: ``step.estimate`` tokens) and answers:
    #     response = client.complete(step.messages, **step.params)   (or a Batch API item)
    settled = life.settle(step, response=response, seconds=call_time, waited=limiter_wait)
    settled = life.settle(step, error=error, seconds=call_time, waited=limiter_wait)
    # settled.result: the task ended (answered, failed for good, or its fallback): finish it.
    # else settled.decision (the RetryPolicy's): ask again after ``decision.delay`` with the
    #     revised ``step.messages``; ``pause_all``/``outage``/``stop_batch`` (cancel the rest
    #     with ``decision.stop_reason``) are for the driver;
    #     ``settled.reached``: the provider answered something (the outage gate opens).
    life.give_up(step, error)        # the driver ends it without an attempt (an outage outlasted
                                     # its budget): the failed result, or the task's fallback
    life.finish(result)              # journal, then progress and on_task_complete
    life.failed(task, error, step)   # containment: whatever a driver caught, as the task's result

``record`` (the journal) and ``announce`` (progress, callback) are ``finish`` in two halves for a
scheduler that releases dependent tasks in between. "Answered from an earlier run" is *reused*
(the journal or the cache: ``source``); tasks sharing one call are *combined*.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from aita.engine._cache import ResponseCache
from aita.engine._client import LLMMessage, LLMResponse
from aita.engine._journal import Checkpoint, CheckpointJournal, JournalIndex, record_of
from aita.engine._keys import request_key
from aita.engine._ledger import SpendLedger
from aita.engine._openai import ENDPOINT, MAX_MODEL_CHARS, provider_text
from aita.engine._progress import BatchProgress
from aita.engine._results import TaskResult, TaskRun
from aita.engine._retry import Decision, RetryPolicy
from aita.engine._tasks import LLMTask, estimate_prompt_tokens
from aita.engine._telemetry import NO_TRACE, BatchTrace, TaskTrace
from aita.errors import (
    ProviderError,
    ResponseParseError,
    RunFailed,
    TruncatedResponse,
    validation_problem,
)

log = logging.getLogger("aita.executor")

#: A task's error message is one line of at most this many characters.
MAX_ERROR_CHARS = 1000

Redact = Callable[[str], str]


def _unchanged(text: str) -> str:
    """No redaction: a client without a key to hide (a local model, a test double)."""
    return text


@dataclass
class Prepared:
    """A task ready to be asked: what it asks, its request key, and its attempts so far."""

    task: LLMTask
    messages: list[LLMMessage]
    params: dict[str, Any]
    #: the request key (``request_key``): model, messages, parameters, task version
    key: str
    #: the model asked for (the task's ``model`` parameter, else the client's)
    model: str
    run: TaskRun
    #: tokens reserved at the limiter for one attempt (0 without a token budget)
    estimate: int = 0
    #: failed attempts counted against the task's retries
    attempt: int = 0
    #: the task's span, when the run is traced (``_telemetry``)
    trace: TaskTrace | None = None

    @property
    def body(self) -> dict[str, Any]:
        """The request body, as a Batch API input line carries it."""
        return {
            "model": self.model,
            "messages": [m.to_openai() for m in self.messages],
            **{k: v for k, v in self.params.items() if k != "model"},
        }

    def line(self) -> dict[str, Any]:
        """The task as one Batch API input line."""
        return {
            "custom_id": self.task.task_id,
            "method": "POST",
            "url": ENDPOINT,
            "body": self.body,
        }


@dataclass(frozen=True)
class Settlement:
    """What an attempt came to: ``result`` when the task ended, else the retry ``decision``."""

    result: TaskResult | None = None
    error: BaseException | None = None
    decision: Decision | None = None
    #: the provider answered (an answer or an HTTP error): it is reachable
    reached: bool = False


@dataclass
class Lifecycle:
    """The steps of one run's tasks (see the module); safe to call from many threads."""

    #: the run's name (its checkpoint), as the spend ledger names it
    name: str
    #: the client's model: part of every request key
    model: str
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    #: the counters (and the bar, if it shows) of the run
    progress: BatchProgress = field(default_factory=lambda: BatchProgress(None, 0, show=False))
    #: where earlier answers are looked up: the journal in memory, or indexed on disk
    lookup: Checkpoint | JournalIndex | None = None
    journal: CheckpointJournal | None = None
    cache: ResponseCache | None = None
    #: the server asked (``client_server``): part of the response cache's key, so an answer
    #: cached from one server is never served for another
    server: str = ""
    ledger: SpendLedger | None = None
    prices: Mapping[str, tuple[float, float]] | None = None
    on_task_complete: Callable[[TaskResult], object] | None = None
    #: takes the API key out of answers and messages (the client's ``redact``)
    redact: Redact = _unchanged
    #: reserve tokens at the limiter for each attempt (a token budget is set)
    token_budget: bool = False
    #: the share of the listed price paid when the provider reports no cost (the Batch API's)
    discount: float = 1.0
    #: OpenTelemetry's hooks, one per step (``_telemetry``); nothing is recorded by default
    trace: BatchTrace = NO_TRACE
    _looked_up: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- prepare -------------------------------------------------------------------------------

    def prepare(self, task: LLMTask) -> Prepared | TaskResult:
        """The task's request and key; its failed result if it cannot build one (a bug in the
        task or a parameter no request can carry: no retry)."""
        run = TaskRun(task.task_id, self.prices, self.discount)
        trace = self.trace.task_start(task.task_id)
        try:
            messages = task.build_messages()
            params = task.request_params()
            key = run.key = _key_of(self.model, messages, params, task.version)
            model = params.get("model") or self.model
            estimate = self._estimate(task, messages, params) if self.token_budget else 0
        except Exception as error:
            return self._give_up(task, run, error, 0)
        return Prepared(task, messages, params, key, str(model), run, estimate, trace=trace)

    @staticmethod
    def _estimate(task: LLMTask, messages: list[LLMMessage], params: dict[str, Any]) -> int:
        """The prompt plus the answer's cap (or its typical size); a cap that is not a count
        is refused here, before any call."""
        answer = params.get("max_tokens") or params.get("max_completion_tokens")
        if answer is not None and (isinstance(answer, bool) or not isinstance(answer, int)):
            raise ValueError(f"max_tokens must be a whole number, not {answer!r}")
        return estimate_prompt_tokens(messages) + int(answer or task.expected_output_tokens)

    # -- look back -----------------------------------------------------------------------------

    def look_back(self, step: Prepared, *, journal: bool = True) -> TaskResult | None:
        """The task's answer from an earlier run: the journal (same id, same request key), then
        the response cache (same request key); None to ask. Counts how the task stood.
        ``journal=False`` for a combined call, which has no record of its own."""
        earlier = None
        try:
            if journal:
                earlier = self._from_journal(step.task, step.key)
        except Exception as error:
            log.warning("task %s: its journal record does not read (%s)", step.task.task_id, error)
        if earlier is not None or self.cache is None:
            return earlier
        try:
            response = self.cache.get(step.key, self.server)
            value = step.task.parse_response(response.content) if response is not None else None
        except Exception as error:  # a row that does not read, or a parser that changed
            log.warning("task %s: the cached answer does not read (%s)", step.task.task_id, error)
            return None
        if response is None:
            return None
        self.progress.cached()
        if self.ledger is not None:
            self.ledger.record(
                batch=self.name,
                model=_model_name(response.model, self.redact) or self.model,
                prompt_tokens=0,
                completion_tokens=0,
                cost=0.0,
                cached=True,
            )
        return step.run.from_cache(value, response)

    def _from_journal(self, task: LLMTask, key: str) -> TaskResult | None:
        result, standing = (
            (None, "new") if self.lookup is None else self.lookup.answer_for(task, key)
        )
        with self._lock:
            first_time = task.task_id not in self._looked_up
            self._looked_up.add(task.task_id)
        if first_time:
            self.progress.stood(standing)
        return result

    # -- settle --------------------------------------------------------------------------------

    def settle(
        self,
        step: Prepared,
        *,
        response: LLMResponse | None = None,
        error: BaseException | None = None,
        seconds: float = 0.0,
        waited: float = 0.0,
    ) -> Settlement:
        """An attempt's answer (or error) settled: usage, cost, ledger, truncation, parse, the
        counters; after an error the retry policy's decision, and the failed result (or the
        fallback) once it gives up."""
        step.run.call_time += seconds
        reached = response is not None
        if response is not None:
            try:
                value = self._answered(step, response)
            except Exception as failure:
                error = failure
            else:
                self.progress.attempt(waited, False, False)
                result = step.run.succeeded(value, step.attempt)
                self.trace.attempt_end(step.trace, result=result)
                return Settlement(result=result, reached=True)
        if error is None:
            error = ProviderError("the client returned neither an answer nor an error")
        reached = reached or (isinstance(error, ProviderError) and error.status_code is not None)
        try:
            decision = self.retry_policy.decide(error, step.attempt, step.task)
        except Exception as failure:  # the task's should_retry failed: it has the last word
            log.warning("should_retry of task %s failed: %s", step.task.task_id, failure)
            decision = Decision(retry=False)
        self.progress.attempt(waited, decision.pause_all, decision.retry)
        if decision.retry and not decision.outage and isinstance(error, Exception):
            step.attempt += 1
            try:
                step.messages = step.task.revise_messages(step.messages, error)
            except Exception as failure:
                error = failure
                decision = Decision(retry=False)
        if decision.retry:
            self.trace.attempt_end(step.trace, error, decision)
            return Settlement(error=error, decision=decision, reached=reached)
        # the decision's failure says more than the error (a spent quota names the wait)
        result = self._give_up(step.task, step.run, decision.failure or error, step.attempt)
        self.trace.attempt_end(step.trace, error, decision, result)
        return Settlement(result=result, error=error, decision=decision, reached=reached)

    def _answered(self, step: Prepared, response: LLMResponse) -> Any:
        """Count and pay for an answer, then read it: the task's value, or the error to decide
        on (cut off when the task says that is an error; not parsed)."""
        response.model = _model_name(response.model, self.redact)
        response.content = self.redact(response.content) if response.content else ""
        step.run.record(response)
        self.trace.answered(step.trace, response, step.run.last_cost)
        self.progress.answered(step.run.last_cost is not None, response.simulated)
        if self.ledger is not None and not response.simulated:
            self.ledger.record(
                batch=self.name,
                model=response.model or step.model,
                prompt_tokens=response.usage.prompt_tokens,
                completion_tokens=response.usage.completion_tokens,
                cost=step.run.last_cost,
            )
        if response.truncated:
            self.progress.truncated()
            if step.task.truncation_is_error:
                raise TruncatedResponse(
                    "the answer was cut off at the token limit (finish_reason=length)"
                )
            log.warning("task %s: the answer was cut off at the token limit", step.task.task_id)
        value = parse(step.task, response)
        if self.cache is not None and not response.simulated:
            self.cache.put(step.key, response, self.server)
        return value

    def give_up(self, step: Prepared, error: BaseException) -> TaskResult:
        """The task ends on ``error`` without another attempt (an outage outlasted its budget):
        its failed result, or its fallback."""
        return self._give_up(step.task, step.run, error, step.attempt)

    def _give_up(
        self, task: LLMTask, run: TaskRun, error: BaseException, attempt: int
    ) -> TaskResult:
        """The failed result, or the task's fallback if it has one."""
        message = self.reason(error)
        try:
            if task.has_fallback and isinstance(error, Exception):
                return run.fell_back(error, attempt, task.fallback(error), message)
        except Exception as fallback_error:
            log.warning("fallback of task %s failed: %s", task.task_id, fallback_error)
        return run.failed(error, attempt, message)

    def failed(
        self, task: LLMTask, error: BaseException, step: Prepared | None = None
    ) -> TaskResult:
        """Containment: anything a driver caught while running the task, as its failed result
        (never its fallback: the failure was not the provider's)."""
        log.warning("task %s failed: %s", task.task_id, self.reason(error))
        if step is None:  # it never got as far as a request: nothing was paid
            return TaskRun(task.task_id, None).failed(error, 0, self.reason(error))
        return step.run.failed(error, step.attempt, self.reason(error))

    def reason(self, error: BaseException) -> str:
        """An error as a task's one-line reason: printable, the key redacted, bounded."""
        return provider_text(str(error) or type(error).__name__, self.redact, MAX_ERROR_CHARS)

    # -- finish --------------------------------------------------------------------------------

    def finish(self, result: TaskResult) -> None:
        """A task has ended: into the journal, then the progress bar and ``on_task_complete``."""
        self.record(result)
        self.announce(result)

    def record(self, result: TaskResult) -> None:
        """Write a finished task to the journal (one reused from it is there already);
        ``RunFailed`` naming the file when it cannot be written."""
        self.trace.task_end(result)
        with self._lock:
            self._looked_up.discard(result.task_id)
        if self.journal is None or result.source == "journal":
            return
        try:
            self.journal.append(record_of(result))
        except OSError as error:
            raise RunFailed(
                f"{self.journal.path}: cannot write ({error.strerror or error}); the tasks "
                "saved before resume"
            ) from error

    def announce(self, result: TaskResult) -> None:
        """The progress bar and the caller's ``on_task_complete`` (whose failure is logged;
        a ``RunFailed`` from it, a results file that cannot be written, stops the run)."""
        self.progress.task_done(result)
        if self.on_task_complete is None:
            return
        try:
            self.on_task_complete(result)
        except RunFailed:
            raise
        except Exception:
            log.exception("on_task_complete failed for task %s", result.task_id)


def parse(task: LLMTask, response: LLMResponse) -> Any:
    """The task's value of an answer; ``ResponseParseError`` with a one-line reason."""
    try:
        return task.parse_response(response.content)
    except Exception as error:
        if isinstance(error, ValidationError):
            where, what = validation_problem(error, show_input=False)
            reason = f"{where}: {what}" if where else what
        else:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if response.truncated:
            reason += " (the answer was cut off at the token limit)"
        raise ResponseParseError(
            f"could not parse the response: {reason}", response.content
        ) from error


def _key_of(
    model: str, messages: list[LLMMessage], params: dict[str, Any], version: str | int | None
) -> str:
    try:
        return request_key(model, messages, params, version)
    except orjson.JSONEncodeError as error:  # nested past any JSON writer's depth, say
        raise ValueError(f"the request cannot be written as JSON ({error})") from error


def _model_name(name: object, redact: Redact) -> str:
    """A model name from outside: printable, bounded, the key redacted."""
    return provider_text(name, redact, MAX_MODEL_CHARS) if isinstance(name, str) else ""
