"""OpenTelemetry traces and metrics of a batch, for the backends people already watch.

Optional: with ``opentelemetry-api`` not installed (``pip install 'aita[otel]'`` adds it), or
installed with neither a tracer nor a meter provider configured, ``Telemetry.batch`` hands back
``NO_TRACE``, whose hooks do nothing; whether a provider is configured is checked once per
batch, so an unconfigured API costs a method call per hook and no span is made.

With a provider, one batch is traced as::

    aita.batch                      INTERNAL  aita.batch.name, .tasks, .completed, .failed, ...
      aita.task                     INTERNAL  aita.task.id, aita.source (call/journal/cache),
                                              aita.outcome, aita.retries, aita.cost, error.type
        wait 429 | wait outage | wait limiter      a wait before an attempt, as a short span
        chat {model}                CLIENT    one attempt: the GenAI semantic conventions'
                                              inference span (gen_ai.*, server.*, error.type)
                                              plus aita.attempt and aita.cost

The conventions (still "development") want one inference span per logical call; aita retries
itself, so the task span is that logical call and each attempt is its own CLIENT span: a retry,
a 429 and the wait it caused are all visible. Prompts and answers are never recorded.

The engine calls one hook per step (``BatchTrace``): ``task_start`` when a task is prepared,
``sending`` just before a call (its waits become wait spans), ``answered`` when the provider
answered, ``attempt_end`` when the attempt is settled, ``task_end`` when the task's result is
final, and the batch trace is a context manager around the run.

Metrics (meter ``aita``): ``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage``
as the conventions name them, and aita's ``aita.calls``, ``aita.cost``, ``aita.rate_limited``
(429s), ``aita.calls.in_flight``, ``aita.rate`` (the limiter's current requests per second) and
``aita.tasks`` (by source and outcome).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
except ImportError:  # the optional extra is not installed: every hook is a no-op
    otel_metrics = None  # type: ignore[assignment]
    otel_trace = None  # type: ignore[assignment]

from aita.errors import ProviderError, RateLimited

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from aita.engine._client import LLMResponse
    from aita.engine._results import TaskResult
    from aita.engine._retry import Decision

#: Waits shorter than this get no span: a limiter that let a call through at once is no news.
MIN_WAIT_SECONDS = 0.001
#: Names from the provider (the model that answered, a finish reason) are cut to this length.
MAX_NAME = 200
#: Error descriptions on spans are cut to this many characters (they quote the provider).
MAX_DESCRIPTION = 200
#: The conventions' buckets for ``gen_ai.client.operation.duration`` (seconds) ...
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))
#: ... and for ``gen_ai.client.token.usage`` (tokens).
TOKEN_BUCKETS = tuple(4**i for i in range(14))

#: ``gen_ai.provider.name`` for the hosts the conventions name; others get their host name.
_PROVIDERS = {
    "api.openai.com": "openai",
    "openrouter.ai": "openrouter",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral_ai",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "x_ai",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "api.anthropic.com": "anthropic",
}
#: Request parameters recorded as the conventions' ``gen_ai.request.*`` attributes.
_REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "seed": "gen_ai.request.seed",
}


class Telemetry:
    """Where an executor's spans and metrics go: the providers given, else the global ones
    (``opentelemetry.trace.set_tracer_provider``), looked up at each batch's start."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._instruments: tuple[object, _Instruments] | None = None
        self._lock = threading.Lock()

    def batch(self, name: str, tasks: int | None, client: object, limiter: object) -> BatchTrace:
        """The hooks of one batch: ``NO_TRACE`` unless a tracer or meter provider is set.

        ``client`` gives the model and server; ``limiter`` the current rate (its ``rate``)."""
        if otel_trace is None:
            return NO_TRACE
        tracer_provider = self.tracer_provider or otel_trace.get_tracer_provider()
        meter_provider = self.meter_provider or otel_metrics.get_meter_provider()
        tracing = _configured(tracer_provider)
        metering = _configured(meter_provider)
        if not (tracing or metering):
            return NO_TRACE
        from aita import __version__

        tracer = (
            tracer_provider.get_tracer("aita", __version__) if tracing else otel_trace.NoOpTracer()
        )
        instruments = self._instruments_of(meter_provider, __version__) if metering else None
        return _LiveTrace(tracer, instruments, name, tasks, client, limiter)

    def _instruments_of(self, provider: MeterProvider, version: str) -> _Instruments:
        """One set of instruments per meter provider (an executor runs many batches)."""
        with self._lock:
            if self._instruments is None or self._instruments[0] is not provider:
                meter = provider.get_meter("aita", version)
                self._instruments = (provider, _Instruments(meter))
            return self._instruments[1]


def _configured(provider: object) -> bool:
    """A real provider, not the API's stand-in for "none set yet" or its no-op. (The API's own
    classes exactly: Logfire, for one, sets a provider of its own called ProxyTracerProvider.)"""
    assert otel_trace is not None and otel_metrics is not None
    stand_ins: tuple[type, ...] = (
        otel_trace.ProxyTracerProvider,
        otel_trace.NoOpTracerProvider,
        otel_metrics.NoOpMeterProvider,
    )
    if isinstance(provider, stand_ins):
        return False
    # The meter provider's "none set yet" is not public: known by its module and name.
    kind = type(provider)
    return not (kind.__module__.startswith("opentelemetry.metrics") and "Proxy" in kind.__name__)


class _Instruments:
    def __init__(self, meter: Any) -> None:
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of one call to the model (one attempt)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Input and output tokens of one answered call",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.calls = meter.create_counter(
            "aita.calls", unit="{call}", description="Calls to the model, answered or not"
        )
        self.cost = meter.create_counter(
            "aita.cost", unit="{USD}", description="What the answered calls cost, in USD"
        )
        self.rate_limited = meter.create_counter(
            "aita.rate_limited", unit="{response}", description="Calls refused with HTTP 429"
        )
        self.in_flight = meter.create_up_down_counter(
            "aita.calls.in_flight", unit="{call}", description="Calls sent and not yet answered"
        )
        self.rate = meter.create_gauge(
            "aita.rate", unit="{request}/s", description="The rate limiter's current rate"
        )
        self.tasks = meter.create_counter(
            "aita.tasks", unit="{task}", description="Tasks ended, by source and outcome"
        )


class TaskTrace:
    """One task's span, its attempt in flight, and what its next wait span should be called."""

    __slots__ = ("after_429", "call", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.call: AttemptTrace | None = None
        self.after_429 = False


class AttemptTrace:
    """One attempt's span, its start, and the attributes its metrics carry."""

    __slots__ = ("attributes", "span", "started")

    def __init__(self, span: Span, attributes: dict[str, Any]) -> None:
        self.span = span
        self.attributes = attributes
        self.started = time.perf_counter()


class BatchTrace:
    """The hooks the engine calls, one per step; this base does nothing (``NO_TRACE``).

    A context manager: leaving it ends the batch span (with the error, if one escaped)."""

    def __enter__(self) -> BatchTrace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end(error)

    def end(self, error: BaseException | None = None) -> None:
        """The batch has ended (``error``: what stopped it)."""

    def task_start(self, task_id: str) -> TaskTrace | None:
        """A task starts: its span opens under the batch's (the one still open for this id, if
        the task is started again: a member of a combined call run alone)."""
        return None

    def task_end(self, result: TaskResult) -> None:
        """The batch has the task's ``result`` (called once per task of the batch, whether it
        ran, was reused or was cancelled): counted, and its span ended if still open. (A task
        stopped by Ctrl-C is ended with the batch.)"""

    def sending(
        self,
        task: TaskTrace | None,
        attempt: int,
        params: Mapping[str, Any],
        since: float | None,
        waited: float,
    ) -> None:
        """The task's call is about to be sent (``attempt`` counts from 0): its waits become
        wait spans, then the attempt's span opens. ``waited``: seconds at the limiter;
        ``since``: when the task came to an outage gate that was closed (``time.monotonic``;
        None if it was open), so the time since then, less ``waited``, was the outage's."""

    def answered(self, task: TaskTrace | None, response: LLMResponse, cost: float | None) -> None:
        """The provider answered the task's call (the answer may still fail to parse)."""

    def attempt_end(
        self,
        task: TaskTrace | None,
        error: BaseException | None = None,
        decision: Decision | None = None,
        result: TaskResult | None = None,
    ) -> None:
        """The task's attempt was settled: it succeeded, or failed with ``error`` and the retry
        ``decision``; with ``result``, the task's span ends too (a combined call's task, which
        no ``task_end`` follows). No call sent (``sending``), no attempt span."""


#: The hooks of a batch nobody watches.
NO_TRACE: BatchTrace = BatchTrace()


class _LiveTrace(BatchTrace):
    """The hooks of a batch with a tracer or meter provider configured."""

    def __init__(
        self,
        tracer: Tracer,
        instruments: _Instruments | None,
        name: str,
        tasks: int | None,
        client: object,
        limiter: object,
    ) -> None:
        assert otel_trace is not None
        self._tracer = tracer
        self._metrics = instruments
        self._limiter = limiter
        model = getattr(client, "model", None)
        self._model = model if isinstance(model, str) and model else type(client).__name__
        self._common: dict[str, Any] = {"gen_ai.operation.name": "chat"}
        url = getattr(client, "base_url", None)
        host = urlsplit(url).hostname if isinstance(url, str) else None
        if host and isinstance(url, str):
            self._common["server.address"] = host
            port = _port_of(url)
            if port is not None:
                self._common["server.port"] = port
        self._common["gen_ai.provider.name"] = _PROVIDERS.get(host or "", host or "unknown")
        attributes: dict[str, Any] = {"aita.batch.name": name}
        if tasks is not None:
            attributes["aita.batch.tasks"] = tasks
        self._span = tracer.start_span("aita.batch", attributes=attributes)
        self._context = otel_trace.set_span_in_context(self._span)
        self._lock = threading.Lock()
        self._counts = {"completed": 0, "failed": 0, "journal": 0, "cache": 0, "calls": 0}
        self._cost = 0.0
        #: the spans of the tasks started and not yet ended, by task id
        self._open: dict[str, TaskTrace] = {}
        self._record_rate()

    def end(self, error: BaseException | None = None) -> None:
        with self._lock:
            counts = dict(self._counts)
            cost = self._cost
            stopped, self._open = list(self._open.values()), {}
        for task in stopped:  # stopped by Ctrl-C (or the run failed) before they ended
            self._attempt_end(task, None, None)
            task.span.set_attribute("aita.stopped", True)
            task.span.end()
        span = self._span
        for key, value in counts.items():
            span.set_attribute(f"aita.batch.{key}", value)
        span.set_attribute("aita.cost", cost)
        if error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(otel_trace.StatusCode.ERROR, _describe(error))
        span.end()

    def task_start(self, task_id: str) -> TaskTrace:
        with self._lock:
            task = self._open.get(task_id)
            if task is None:
                span = self._tracer.start_span(
                    "aita.task", context=self._context, attributes={"aita.task.id": task_id}
                )
                task = self._open[task_id] = TaskTrace(span)
        return task

    def task_end(self, result: TaskResult) -> None:
        self._close(result)
        source = result.source
        with self._lock:
            self._counts["completed" if result.success else "failed"] += 1
            if source != "call":
                self._counts[source] += 1
        if self._metrics is not None:
            self._metrics.tasks.add(1, {"aita.source": source, "aita.outcome": result.outcome})

    def _close(self, result: TaskResult) -> None:
        """End the span of the task of ``result``, if it is open."""
        with self._lock:
            task = self._open.pop(result.task_id, None)
        if task is None:
            return
        if task.call is not None:  # the driver failed between sending and settling
            self._attempt_end(task, result.exception, None)
        span = task.span
        span.set_attributes(
            {
                "aita.source": result.source,
                "aita.outcome": result.outcome,
                "aita.retries": result.retry_count,
                "aita.cost": result.cost,
                "aita.success": result.success,
            }
        )
        if result.model:
            span.set_attribute("gen_ai.response.model", result.model[:MAX_NAME])
        if result.used_fallback:
            span.set_attribute("aita.fallback", True)
        if result.combined:
            span.set_attribute("aita.combined", True)
        if not result.success:
            span.set_attribute("error.type", result.error_type or "error")
            span.set_status(otel_trace.StatusCode.ERROR, (result.error or "")[:MAX_DESCRIPTION])
        span.end()

    def _waited(self, task: TaskTrace, reason: str, seconds: float) -> None:
        if seconds < MIN_WAIT_SECONDS:
            return
        if reason == "limiter" and task.after_429:
            reason = "429"
        end = time.time_ns()
        span = self._tracer.start_span(
            f"wait {reason}",
            context=otel_trace.set_span_in_context(task.span),
            attributes={"aita.wait.reason": reason, "aita.wait.seconds": seconds},
            start_time=end - int(seconds * 1e9),
        )
        span.end(end_time=end)

    def sending(
        self,
        task: TaskTrace | None,
        attempt: int,
        params: Mapping[str, Any],
        since: float | None,
        waited: float,
    ) -> None:
        if task is None:
            return
        if since is not None:
            self._waited(task, "outage", time.monotonic() - since - waited)
        self._waited(task, "limiter", waited)
        model = params.get("model") or self._model
        metric_attributes = {**self._common, "gen_ai.request.model": model}
        span_attributes: dict[str, Any] = {**metric_attributes, "aita.attempt": attempt}
        for param, attribute in _REQUEST_PARAMS.items():
            value = params.get(param)
            if isinstance(value, int | float) and not isinstance(value, bool):
                span_attributes[attribute] = value
        span = self._tracer.start_span(
            f"chat {model}",
            context=otel_trace.set_span_in_context(task.span),
            kind=otel_trace.SpanKind.CLIENT,
            attributes=span_attributes,
        )
        if self._metrics is not None:
            self._metrics.in_flight.add(1, self._common)
        task.call = AttemptTrace(span, metric_attributes)

    def answered(self, task: TaskTrace | None, response: LLMResponse, cost: float | None) -> None:
        attempt = task.call if task is not None else None
        if attempt is None:
            return
        usage = response.usage
        attributes: dict[str, Any] = {
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
        }
        if response.model:  # the provider's words: bounded
            model = response.model[:MAX_NAME]
            attributes["gen_ai.response.model"] = model
            attempt.attributes["gen_ai.response.model"] = model
        if response.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (response.finish_reason[:MAX_NAME],)
        if cost is not None:
            attributes["aita.cost"] = cost
        if response.simulated:
            attributes["aita.simulated"] = True
        attempt.span.set_attributes(attributes)
        if cost is not None and not response.simulated:
            with self._lock:
                self._cost += cost
        metrics = self._metrics
        if metrics is not None:
            metrics.tokens.record(
                usage.prompt_tokens, {**attempt.attributes, "gen_ai.token.type": "input"}
            )
            metrics.tokens.record(
                usage.completion_tokens, {**attempt.attributes, "gen_ai.token.type": "output"}
            )
            if cost is not None and not response.simulated:
                metrics.cost.add(cost, attempt.attributes)

    def attempt_end(
        self,
        task: TaskTrace | None,
        error: BaseException | None = None,
        decision: Decision | None = None,
        result: TaskResult | None = None,
    ) -> None:
        self._attempt_end(task, error, decision)
        if result is not None:
            self._close(result)

    def _attempt_end(
        self, task: TaskTrace | None, error: BaseException | None, decision: Decision | None
    ) -> None:
        attempt = task.call if task is not None else None
        if task is None or attempt is None:
            return
        task.call = None
        elapsed = time.perf_counter() - attempt.started
        span = attempt.span
        attributes = attempt.attributes
        if error is not None:
            kind = type(error).__qualname__
            attributes = {**attributes, "error.type": kind}
            span.set_attribute("error.type", kind)
            status = getattr(error, "status_code", None)
            if isinstance(error, ProviderError) and isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
            if decision is not None:
                span.set_attributes(
                    {
                        "aita.retry": decision.retry,
                        "aita.retry.delay": decision.delay,
                        "aita.retry.pause_all": decision.pause_all,
                        "aita.retry.outage": decision.outage,
                    }
                )
            span.set_status(otel_trace.StatusCode.ERROR, _describe(error))
            task.after_429 = isinstance(error, RateLimited)
        span.end()
        with self._lock:
            self._counts["calls"] += 1
        metrics = self._metrics
        if metrics is None:
            return
        metrics.in_flight.add(-1, self._common)
        metrics.duration.record(elapsed, attributes)
        metrics.calls.add(1, attributes)
        if isinstance(error, RateLimited):
            metrics.rate_limited.add(1, attributes)
        self._record_rate()

    def _record_rate(self) -> None:
        rate = getattr(self._limiter, "rate", None)
        if self._metrics is not None and isinstance(rate, int | float) and rate > 0:
            self._metrics.rate.set(rate, self._common)


def _port_of(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:MAX_DESCRIPTION]
