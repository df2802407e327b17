"""What real servers do that our simulator did not: refuse structured output, send odd limit
headers, go down for a while, take no images; and clients users write themselves."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from aita.engine import (
    LLMMessage,
    LLMResponse,
    LLMTask,
    ParallelLLMExecutor,
    ProviderUnavailable,
    SimpleLLMTask,
    VisionLLMTask,
    create_openrouter_client,
    json_schema_response_format,
)
from tests.support.doubles import (
    PNG_1PX,
    SimulatorFactory,
    assert_own_answers_in_order,
    client_for,
    executor_for,
    questions,
)


class Verdict(BaseModel):
    score: int
    reasons: list[str]
    note: str | None = None


class VerdictTask(LLMTask):
    response_model: ClassVar[type[BaseModel] | None] = Verdict

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def task_id(self) -> str:
        return f"verdict_{self.n}"

    def build_messages(self) -> list[LLMMessage]:
        return [LLMMessage("user", f"Judge answer {self.n}")]


def test_the_strict_schema_is_built_as_openai_requires() -> None:
    fmt = json_schema_response_format(Verdict)
    schema = fmt["json_schema"]["schema"]
    assert fmt["json_schema"]["strict"] is True
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"score", "reasons", "note"}


@pytest.mark.parametrize("status", [400, 422, 500])
def test_a_server_that_refuses_json_schema_is_asked_otherwise_once_per_client(
    simulator: SimulatorFactory, status: int
) -> None:
    sim = simulator(refuse_json_schema=status, latency=0.01)
    client = client_for(sim)
    result = executor_for(client, max_workers=8).execute_batch([VerdictTask(i) for i in range(40)])
    assert all(isinstance(r.result, Verdict) for r in result.task_results)
    assert sim.stats.by_status[status] == 1  # one refused call in the client's life
    assert result.metrics.total_retries == 0  # a refusal is not retried as an outage
    assert client.formats.mode == "json_object"


def test_a_server_that_takes_neither_format_gets_the_schema_in_the_prompt(
    simulator: SimulatorFactory,
) -> None:
    def answer(request: dict[str, Any]) -> str:
        fmt = request.get("response_format")
        if fmt is not None:
            raise AssertionError("no response format should be sent any more")
        system = request["messages"][0]["content"]
        assert "JSON schema" in system and '"score"' in system
        return "```json\n" + json.dumps({"score": 3, "reasons": ["ok"], "note": None}) + "\n```"

    calls: list[str] = []

    def refuse_formats(request: dict[str, Any]) -> str | None:
        fmt = (request.get("response_format") or {}).get("type")
        calls.append(str(fmt))
        if fmt is not None:
            raise ValueError(f"response_format {fmt} is not supported")  # answered 500
        return answer(request)

    sim = simulator(responder=refuse_formats)
    client = client_for(sim)
    result = executor_for(client).execute_batch([VerdictTask(i) for i in range(5)])
    assert [r.result.score for r in result.task_results] == [3] * 5
    assert calls[:2] == ["json_schema", "json_object"] and set(calls[2:]) == {"None"}
    assert client.formats.refusals == 2


def test_fenced_json_answers_are_read(simulator: SimulatorFactory) -> None:
    sim = simulator(fence_json=True)
    result = executor_for(client_for(sim)).execute_batch([VerdictTask(i) for i in range(3)])
    assert all(isinstance(r.result, Verdict) for r in result.task_results)


@pytest.mark.slow
@pytest.mark.parametrize(
    "header",
    [{"limit_window": 1.0}, {"limit_window": 86400.0}, {"limit_header": "0"},
     {"limit_header": "garbage"}],
    ids=["per second", "per day", "zero", "garbage"],
)  # fmt: skip
def test_odd_limit_headers_do_not_slow_a_batch_below_the_servers_rate(
    simulator: SimulatorFactory, header: dict[str, Any]
) -> None:
    sim = simulator(rate_limit=20, latency=0.02, **header)
    executor = executor_for(client_for(sim), max_workers=8, rate_limit=20, max_retries=8)
    started = time.perf_counter()
    result = executor.execute_batch(questions(160))
    wall = time.perf_counter() - started
    assert_own_answers_in_order(result.task_results)
    assert (160 / 20) / wall >= 0.85, f"{160 / wall:.1f} tasks/s against 20/s"


def run_through_outage(simulator: SimulatorFactory, kind: str) -> None:
    sim = simulator(latency=0.02)
    executor = ParallelLLMExecutor(
        client_for(sim, timeout=10), max_workers=8, rate_limit=50, show_progress=False
    )  # default retries, backoff and outage budget
    tasks = questions(300)
    outage_started = threading.Event()

    def go_down_after_100(result: Any) -> None:
        if not outage_started.is_set() and int(result.task_id[1:]) >= 100:
            outage_started.set()
            sim.start_outage(15, kind)

    result = executor.execute_batch(tasks, on_task_complete=go_down_after_100)
    assert_own_answers_in_order(result.task_results)
    assert sim.stats.outage_hits > 0
    assert result.metrics.wall_time >= 15


@pytest.mark.slow
def test_a_15_second_outage_of_reset_connections_is_ridden_through(
    simulator: SimulatorFactory,
) -> None:
    run_through_outage(simulator, "reset")


@pytest.mark.slow
def test_a_15_second_outage_of_503s_is_ridden_through(simulator: SimulatorFactory) -> None:
    run_through_outage(simulator, "503")


def test_an_outage_past_its_budget_stops_the_batch_cleanly(simulator: SimulatorFactory) -> None:
    sim = simulator(latency=0.01)
    executor = executor_for(client_for(sim, timeout=5), max_workers=4, outage_budget=1.0)
    sim.start_outage(60, "503")
    result = executor.execute_batch(questions(20), checkpoint_name="down")
    assert not result.successful_results
    kinds = {r.error_type for r in result.task_results}
    assert kinds <= {"ProviderOutage", "Cancelled"} and "ProviderOutage" in kinds
    assert "AITA_OUTAGE_BUDGET" in (result.task_results[0].error or "")
    assert sim.stats.outage_hits < 20  # workers waited at the gate: probes, not a storm


class FlakyDictClient:
    """A user's own client: raises ConnectionError on every third call, gives usage as a dict."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
        with self.lock:
            self.calls += 1
            fail = self.calls % 3 == 0
        if fail:
            raise ConnectionError("connection reset by peer")
        usage: Any = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        return LLMResponse(content=f"ok {messages[-1].content}", usage=usage, model=None)  # type: ignore[arg-type]


def test_a_custom_client_raising_connection_errors_with_dict_usage_finishes_every_task() -> None:
    client = FlakyDictClient()
    result = executor_for(client, max_workers=4).execute_batch(questions(60))
    assert [r.result for r in result.task_results] == [f"ok question {i}" for i in range(60)]
    assert result.metrics.prompt_tokens == 10 * 60 and result.metrics.completion_tokens == 5 * 60


@pytest.mark.parametrize("error", [TimeoutError("slow"), OSError("network is unreachable")])
def test_a_custom_clients_os_errors_are_retried(error: Exception) -> None:
    class FailsOnce:
        calls = 0

        def complete(self, messages: list[LLMMessage], **params: Any) -> LLMResponse:
            FailsOnce.calls += 1
            if FailsOnce.calls == 1:
                raise error
            return LLMResponse(content="fine", usage=None)  # type: ignore[arg-type]

    [result] = executor_for(FailsOnce(), max_workers=1).execute_batch(questions(1)).task_results
    assert result.success and result.retry_count == 1


def test_an_answer_cut_off_at_max_tokens_is_reported(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = simulator()
    long = SimpleLLMTask("long", "x" * 200, max_tokens=5)
    short = SimpleLLMTask("short", "y", max_tokens=50)
    result = executor_for(client_for(sim)).execute_batch([long, short])
    assert [r.finish_reason for r in result.task_results] == ["length", "stop"]
    assert result.metrics.truncated_responses == 1
    assert "cut off" in caplog.text

    class Strict(SimpleLLMTask):
        truncation_is_error = True

    [strict] = (
        executor_for(client_for(sim))
        .execute_batch([Strict("t", "z" * 200, max_tokens=5)])
        .task_results
    )
    assert not strict.success and strict.error_type == "TruncatedResponse"


def test_a_failed_parse_keeps_the_raw_answer(simulator: SimulatorFactory) -> None:
    sim = simulator()
    task = SimpleLLMTask("t", "not json", parse_fn=json.loads)
    [result] = (
        executor_for(client_for(sim), max_retries=0)
        .execute_batch([task], checkpoint_name="raw")
        .task_results
    )
    assert not result.success and result.raw_response == "[sim] not json"
    assert result.exception is not None


class Page(VisionLLMTask):
    def __init__(self, n: int, path: str) -> None:
        self.n, self.path = n, path

    @property
    def task_id(self) -> str:
        return f"page_{self.n}"

    def get_image_urls(self) -> list[str]:
        return [self.path]

    def get_prompt_text(self) -> str:
        return f"read page {self.n}"


def test_a_text_only_model_fails_image_tasks_at_once_with_a_clear_line(
    simulator: SimulatorFactory, tmp_path: Any
) -> None:
    image = tmp_path / "scan.png"
    image.write_bytes(PNG_1PX)
    sim = simulator(vision=False)
    result = executor_for(client_for(sim), max_workers=1, max_retries=3).execute_batch(
        [Page(i, str(image)) for i in range(4)]
    )
    assert {r.error_type for r in result.task_results} == {"ImagesNotSupported"}
    assert all(r.retry_count == 0 for r in result.task_results)
    assert "does not accept images" in (result.task_results[0].error or "")
    assert sim.stats.requests == 1  # learned once: the other pages are not sent


def test_a_refused_connection_names_the_url() -> None:
    client = create_openrouter_client(api_key="x", base_url="http://127.0.0.1:9/v1", timeout=2)
    with pytest.raises(ProviderUnavailable, match=r"127\.0\.0\.1:9/v1"):
        client.complete([LLMMessage("user", "hi")])


def test_a_base_url_without_v1_says_to_add_it(simulator: SimulatorFactory) -> None:
    sim = simulator()
    base = sim.base_url.removesuffix("/v1")
    client = create_openrouter_client(api_key="x", base_url=base)
    with pytest.raises(Exception, match=r"has no /v1: try .*/v1"):
        client.complete([LLMMessage("user", "hi")])
