"""OpenTelemetry: a batch against the simulator, traced and metered through the SDK's in-memory
exporter and reader (providers given to the executor, never set globally)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aita.engine import SimpleLLMTask, Telemetry, run_via_batch_api
from aita.simulator.batches import BatchSimulation
from tests.engine.test_batching import SquareTask, squares
from tests.support.doubles import ROOT, SimulatorFactory, client_for, executor_for


class Watched:
    """An SDK tracer and meter provider writing to memory, as a backend would receive them."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[self.reader]))

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        """Every data point by metric name."""
        data = self.reader.get_metrics_data()
        assert data is not None
        points: dict[str, list[Any]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "aita"
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points


def children(parent: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    assert parent.context is not None
    found = [
        s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]
    return sorted(found, key=lambda s: s.start_time or 0)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def total(points: list[Any], **where: Any) -> float:
    return float(
        sum(p.value for p in points if all(p.attributes.get(k) == v for k, v in where.items()))
    )


def test_a_batch_is_traced_per_task_and_attempt_with_429_journal_and_cache(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    # The provider lets one call through, then refuses for a second: the second task gets
    # a 429 and succeeds after waiting. announce=False stands in for a real provider, whose
    # answers are cached.
    sim = simulator(rate_limit=1, burst=1, announce=False)
    watched = Watched()
    client = client_for(sim)
    model = client.model
    executor = executor_for(
        client,
        max_workers=1,
        rate_limit=50,
        adaptive_rate=False,
        cache=tmp_path / "cache.sqlite3",
        telemetry=watched.telemetry,
    )
    first = executor.execute_batch(
        [SimpleLLMTask("a", "question a"), SimpleLLMTask("b", "question b")], "watched"
    )
    assert [r.success for r in first.task_results] == [True, True]
    assert sim.stats.rate_limited == 1

    spans = watched.spans.get_finished_spans()
    (batch,) = watched.named("aita.batch")
    assert batch.parent is None
    assert attrs(batch)["aita.batch.name"] == "watched"
    assert attrs(batch)["aita.batch.tasks"] == 2
    assert attrs(batch)["aita.batch.completed"] == 2
    assert attrs(batch)["aita.batch.calls"] == 3
    tasks = {attrs(s)["aita.task.id"]: s for s in children(batch, spans)}
    assert set(tasks) == {"a", "b"}
    assert all(attrs(t)["aita.source"] == "call" for t in tasks.values())
    assert all(t.kind == SpanKind.INTERNAL for t in tasks.values())

    # a: one attempt, the GenAI conventions' inference span.
    (call,) = [s for s in children(tasks["a"], spans) if s.name != "wait limiter"]
    assert call.name == f"chat {model}"
    assert call.kind == SpanKind.CLIENT
    answered = attrs(call)
    assert answered["gen_ai.operation.name"] == "chat"
    assert answered["gen_ai.request.model"] == model
    assert answered["gen_ai.response.model"] == model
    assert answered["gen_ai.usage.input_tokens"] > 0
    assert answered["gen_ai.usage.output_tokens"] > 0
    assert answered["gen_ai.provider.name"] == "127.0.0.1"
    assert answered["server.address"] == "127.0.0.1"
    assert answered["server.port"] == sim.port
    assert answered["aita.attempt"] == 0
    assert answered["aita.cost"] > 0
    assert "error.type" not in answered
    assert call.status.status_code != StatusCode.ERROR

    # b: refused with a 429, a visible wait, then answered: three children in that order.
    # (Pacing at 50 requests/s may add a short "wait limiter" span before a call.)
    steps = [s for s in children(tasks["b"], spans) if s.name != "wait limiter"]
    refused, wait, retried = steps
    assert refused.name == retried.name == f"chat {model}"
    assert attrs(refused)["error.type"] == "RateLimited"
    assert attrs(refused)["http.response.status_code"] == 429
    assert attrs(refused)["aita.retry"] is True
    assert attrs(refused)["aita.retry.pause_all"] is True
    assert refused.status.status_code == StatusCode.ERROR
    assert "gen_ai.usage.input_tokens" not in attrs(refused)
    assert wait.name == "wait 429"
    assert attrs(wait)["aita.wait.reason"] == "429"
    assert attrs(wait)["aita.wait.seconds"] > 0.1
    assert attrs(retried)["aita.attempt"] == 1
    assert "error.type" not in attrs(retried)
    assert attrs(tasks["b"])["aita.retries"] == 1
    assert attrs(tasks["b"])["aita.cost"] == pytest.approx(answered["aita.cost"], rel=0.5)

    metrics = watched.metrics()
    assert total(metrics["aita.calls"]) == 3
    assert total(metrics["aita.calls"], **{"error.type": "RateLimited"}) == 1
    assert total(metrics["aita.rate_limited"]) == 1
    assert total(metrics["aita.calls.in_flight"]) == 0  # every call sent was answered
    assert total(metrics["aita.cost"]) == pytest.approx(first.metrics.total_cost)
    assert total(metrics["aita.rate"]) == 50
    (duration,) = metrics["gen_ai.client.operation.duration"][:1]
    assert sum(p.count for p in metrics["gen_ai.client.operation.duration"]) == 3
    assert duration.attributes["gen_ai.request.model"] == model
    tokens = metrics["gen_ai.client.token.usage"]
    assert {p.attributes["gen_ai.token.type"] for p in tokens} == {"input", "output"}
    input_tokens = sum(p.sum for p in tokens if p.attributes["gen_ai.token.type"] == "input")
    assert input_tokens == first.metrics.prompt_tokens
    assert total(metrics["aita.tasks"], **{"aita.source": "call", "aita.outcome": "done"}) == 2

    # A second run: a and b from the journal, c (a's question under a new id) from the cache.
    watched.spans.clear()
    calls_before = sim.stats.requests
    second = executor.execute_batch(
        [
            SimpleLLMTask("a", "question a"),
            SimpleLLMTask("b", "question b"),
            SimpleLLMTask("c", "question a"),
        ],
        "watched",
    )
    assert [r.success for r in second.task_results] == [True, True, True]
    assert sim.stats.requests == calls_before  # nothing was asked again
    spans = watched.spans.get_finished_spans()
    (batch,) = watched.named("aita.batch")
    sources = {attrs(s)["aita.task.id"]: attrs(s)["aita.source"] for s in children(batch, spans)}
    assert sources == {"a": "journal", "b": "journal", "c": "cache"}
    assert not watched.named(f"chat {model}")  # no call, no attempt span
    assert attrs(batch)["aita.batch.journal"] == 2
    assert attrs(batch)["aita.batch.cache"] == 1
    assert attrs(batch)["aita.batch.calls"] == 0
    metrics = watched.metrics()
    assert total(metrics["aita.tasks"], **{"aita.source": "journal"}) == 2
    assert total(metrics["aita.tasks"], **{"aita.source": "cache"}) == 1
    assert total(metrics["aita.calls"]) == 3  # cumulative: no call was added


def test_an_outage_wait_is_a_span_under_the_task(simulator: SimulatorFactory) -> None:
    sim = simulator()
    watched = Watched()
    executor = executor_for(client_for(sim), max_workers=1, telemetry=watched.telemetry)
    # Down for 0.6 s: the first call and the probe sent at once are refused, the gate waits
    # 0.5 s before the next probe (and 1 s before the one after, if that is refused too).
    sim.start_outage(0.6, kind="503")
    result = executor.execute_batch([SimpleLLMTask("a", "question a")], "outage")
    assert result.task_results[0].success

    spans = watched.spans.get_finished_spans()
    (task,) = watched.named("aita.task")
    steps = children(task, spans)
    waits = [s for s in steps if s.name == "wait outage"]
    attempts = [s for s in steps if s.name.startswith("chat ")]
    assert waits
    assert sum(attrs(w)["aita.wait.seconds"] for w in waits) > 0.1
    assert all(attrs(w)["aita.wait.reason"] == "outage" for w in waits)
    *down, up = attempts
    assert down
    assert all(attrs(a)["http.response.status_code"] == 503 for a in down)
    assert all(attrs(a)["aita.retry.outage"] is True for a in down)
    assert "error.type" not in attrs(up)
    assert attrs(task)["aita.success"] is True


def test_a_failed_task_says_why(simulator: SimulatorFactory) -> None:
    sim = simulator(models=frozenset({"other/model"}))
    watched = Watched()
    executor = executor_for(client_for(sim), telemetry=watched.telemetry)
    result = executor.execute_batch([SimpleLLMTask("a", "question a")], "fails")
    assert not result.task_results[0].success
    (task,) = watched.named("aita.task")
    assert task.status.status_code == StatusCode.ERROR
    assert attrs(task)["error.type"] == result.task_results[0].error_type
    assert attrs(task)["aita.success"] is False
    assert attrs(task)["aita.outcome"] == "failed"
    (batch,) = watched.named("aita.batch")
    assert attrs(batch)["aita.batch.failed"] == 1


def test_without_a_configured_provider_nothing_is_traced(simulator: SimulatorFactory) -> None:
    """With the API's own stand-ins (no SDK set up) the hooks are the no-op ones."""
    telemetry = Telemetry()
    sim = simulator()
    client = client_for(sim)
    assert telemetry.batch("b", 1, client, None).task_start("a") is None
    executor = executor_for(client, telemetry=telemetry)
    assert executor.execute_batch([SimpleLLMTask("a", "question a")]).task_results[0].success


def test_without_the_api_installed_every_hook_is_a_no_op() -> None:
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # as if not installed
        "from aita.engine import Telemetry\n"
        "trace = Telemetry().batch('b', 1, object(), None)\n"
        "with trace:\n"
        "    task = trace.task_start('a')\n"
        "    call = trace.sending(task, 0, {}, 0.0, 0.0)\n"
        "    trace.attempt_end(call)\n"
        "assert task is None and call is None\n"
        "assert 'opentelemetry.trace' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr


def test_tasks_sharing_a_call_are_counted_once_each(simulator: SimulatorFactory) -> None:
    sim = simulator(responder=squares(drop=7))  # 7 is missing from its combined answer
    watched = Watched()
    executor = executor_for(client_for(sim), max_batch_size=5, telemetry=watched.telemetry)
    result = executor.execute_batch([SquareTask([n]) for n in range(10)])
    assert all(r.success for r in result.task_results)

    spans = watched.spans.get_finished_spans()
    (batch,) = watched.named("aita.batch")
    assert attrs(batch)["aita.batch.completed"] == 10  # the tasks, not the combined calls
    assert attrs(batch)["aita.batch.calls"] == sim.stats.requests == 3
    tasks = {attrs(s)["aita.task.id"]: s for s in children(batch, spans)}
    # Each combined call is a task span of its own, holding the call's attempt span.
    for combined in ("n0_1_2_3_4", "n5_6_7_8_9"):
        (call,) = children(tasks[combined], spans)
        assert call.kind == SpanKind.CLIENT
    members = [tasks[f"n{n}"] for n in range(10)]
    assert all(attrs(t)["aita.success"] for t in members)
    assert [n for n in range(10) if attrs(tasks[f"n{n}"]).get("aita.combined")] == [
        0, 1, 2, 3, 4, 5, 6, 8, 9,
    ]  # fmt: skip
    assert len(children(tasks["n7"], spans)) == 1  # asked alone
    assert not any(attrs(s).get("aita.stopped") for s in spans)
    assert total(watched.metrics()["aita.tasks"]) == 10


def test_a_batch_api_job_is_traced_per_task(simulator: SimulatorFactory) -> None:
    sim = simulator(announce=False)
    sim.batch_api.simulation = BatchSimulation(processing_seconds=0.1)
    watched = Watched()
    result = run_via_batch_api(
        client_for(sim),
        [SimpleLLMTask(f"t{i}", f"question {i}") for i in range(3)],
        "job",
        poll_interval=0.05,
        telemetry=watched.telemetry,
    )
    assert all(r.success for r in result.task_results)
    spans = watched.spans.get_finished_spans()
    (batch,) = watched.named("aita.batch")
    assert attrs(batch)["aita.batch.completed"] == 3
    tasks = children(batch, spans)
    assert sorted(attrs(t)["aita.task.id"] for t in tasks) == ["t0", "t1", "t2"]
    assert all(attrs(t)["aita.source"] == "call" and attrs(t)["aita.cost"] > 0 for t in tasks)
    assert total(watched.metrics()["aita.tasks"], **{"aita.outcome": "done"}) == 3


def test_a_stream_is_traced_like_a_batch(simulator: SimulatorFactory) -> None:
    sim = simulator()
    watched = Watched()
    executor = executor_for(client_for(sim), telemetry=watched.telemetry)
    stream = executor.execute_stream(
        (SimpleLLMTask(f"t{i}", f"question {i}") for i in range(5)), "streamed"
    )
    assert all(r.success for r in stream)
    spans = watched.spans.get_finished_spans()
    (batch,) = watched.named("aita.batch")
    assert "aita.batch.tasks" not in attrs(batch)  # a stream's length is not known
    assert attrs(batch)["aita.batch.completed"] == 5
    assert len(children(batch, spans)) == 5
    assert all(s.parent is not None for s in spans if s.name != "aita.batch")
