"""What a Batch API job keeps between runs (its state file and keys files), what it adopts from
a run killed between two steps, what it cancels, and the tasks it answers without asking."""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
import weakref
from pathlib import Path
from typing import Any

import openai
import pytest

from aita.engine import (
    ConfigError,
    LLMMessage,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    ProviderTimeout,
    RateLimited,
    RunFailed,
    SimpleLLMTask,
    TaskGraphError,
    cancel_batch_api,
    request_key,
    run_via_batch_api,
)
from aita.simulator import ProviderSimulator
from tests.engine.test_batch_api import MODEL, clock_of, provider, run, tasks
from tests.support.doubles import TEST_KEY, SimulatorFactory, client_for, silent_server

pytestmark = pytest.mark.timeout(10)

CHECKPOINTS = Path("checkpoints")
STATE = CHECKPOINTS / "job.batch-api.json"
FOLDER = CHECKPOINTS / "job.batch-api"


def answers(n: int, prefix: str = "task") -> list[str]:
    return [f"[sim] {prefix} {i}" for i in range(n)]


def key_of(client: OpenAICompatibleClient, task: SimpleLLMTask) -> str:
    return request_key(client.model, task.build_messages(), task.request_params(), task.version)


SDKS: weakref.WeakKeyDictionary[ProviderSimulator, openai.OpenAI] = weakref.WeakKeyDictionary()
#: one TLS context for them all: each SDK would read the CA bundle again (tens of ms)
TLS = ssl.create_default_context()


def sdk_of(sim: ProviderSimulator) -> openai.OpenAI:
    """The SDK on the simulator, as another program would call it (one per simulator)."""
    if sim not in SDKS:
        SDKS[sim] = openai.OpenAI(
            api_key=TEST_KEY,
            base_url=sim.base_url,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(verify=TLS),
        )
    return SDKS[sim]


def upload(sim: ProviderSimulator, task_list: list[SimpleLLMTask], url: str | None = None) -> str:
    """An input file as a run uploads it; ``url``: another endpoint (lines the provider refuses)."""
    lines = "".join(
        json.dumps(
            {
                "custom_id": task.task_id,
                "method": "POST",
                "url": url or "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": task.prompt}]},
            }
        )
        + "\n"
        for task in task_list
    )
    return sdk_of(sim).files.create(file=("in.jsonl", lines.encode()), purpose="batch").id


def create(sim: ProviderSimulator, file_id: str) -> Any:
    return sdk_of(sim).batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def leave_state(
    sim: ProviderSimulator,
    client: OpenAICompatibleClient,
    task_list: list[SimpleLLMTask],
    *,
    uploads: list[tuple[str, float]] = (),  # type: ignore[assignment]
    batches: list[str] = (),  # type: ignore[assignment]
    base_url: str | None = None,
) -> None:
    """What a killed run leaves: its state file, and one keys file naming ``task_list``."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    (FOLDER / "k.keys.jsonl").write_text(
        "".join(json.dumps([t.task_id, key_of(client, t)]) + "\n" for t in task_list)
    )
    state = {
        "aita_batch_api": 1,
        "name": "job",
        "base_url": base_url or sim.base_url,
        "batches": [
            {"id": b, "input_file_id": "file-x", "keys": "k.keys.jsonl", "requests": len(task_list)}
            for b in batches
        ],
        "uploads": [
            {
                "input_file_id": f,
                "keys": "k.keys.jsonl",
                "requests": len(task_list),
                "uploaded_at": t,
            }
            for f, t in uploads
        ],
    }
    STATE.write_text(json.dumps(state))


# -- what is written while a batch runs, and what is left after --------------------------------


def test_while_a_batch_runs_its_id_and_keys_are_on_disk_and_nothing_is_left_after(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    seen: dict[str, Any] = {}

    def look() -> None:
        seen["state"] = json.loads(STATE.read_text())
        seen["files"] = sorted(p.name for p in FOLDER.iterdir())
        seen["keys"] = [
            json.loads(line) for line in (FOLDER / seen["files"][0]).read_text().splitlines()
        ]

    clock_of(sim).at[1] = look
    result = run(client, tasks(3))
    assert [r.result for r in result.task_results] == answers(3)
    assert seen["state"] == {
        "aita_batch_api": 1,
        "name": "job",
        "base_url": sim.base_url,
        "batches": [
            {
                "id": "batch_sim000002",
                "input_file_id": "file-sim000001",
                "keys": seen["files"][0],
                "requests": 3,
                "collected": False,
            }
        ],
        "uploads": [],
    }
    (keys_file,) = seen["files"]  # the requests file went once uploaded
    assert re.fullmatch(r"\d{8}_\d{6}_00000\.keys\.jsonl", keys_file)
    assert seen["keys"] == [[t.task_id, key_of(client, t)] for t in tasks(3)]
    assert not STATE.exists() and not FOLDER.exists()


def test_each_batch_of_a_run_has_its_own_numbered_keys_file(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    seen: list[str] = []
    clock_of(sim).at[1] = lambda: seen.extend(sorted(p.name for p in FOLDER.iterdir()))
    run(client_for(sim, model=MODEL), tasks(3), max_requests_per_file=2)
    assert [name[15:] for name in seen] == ["_00000.keys.jsonl", "_00001.keys.jsonl"]


def test_the_batch_carries_the_window_and_the_checkpoint_name(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    name = "n" * 600
    run(client_for(sim, model=MODEL), tasks(1), checkpoint_name=name, completion_window="1h")
    (batch,) = sdk_of(sim).batches.list().data
    assert batch.completion_window == "1h"
    assert batch.metadata == {"aita_checkpoint": "n" * 512}
    assert batch.endpoint == "/v1/chat/completions"


def test_the_default_checkpoint_name_is_the_executors(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    run(client_for(sim, model=MODEL), tasks(1), checkpoint_name=None)
    (batch,) = sdk_of(sim).batches.list().data
    assert batch.metadata == {"aita_checkpoint": "batch_SimpleLLMTask"}


def test_a_batch_left_open_for_tasks_no_longer_asked_stays_on_record(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    clock_of(sim).at[1] = interrupt
    with pytest.raises(KeyboardInterrupt):
        run(client, tasks(2))
    (old_keys,) = FOLDER.iterdir()
    result = run(client, tasks(2, prefix="edited"))  # the open batch asks the old questions
    assert [r.result for r in result.task_results] == answers(2, "edited")
    state = json.loads(STATE.read_text())
    assert [b["id"] for b in state["batches"]] == ["batch_sim000002"]
    assert list(FOLDER.iterdir()) == [old_keys]  # the collected batch's keys went
    assert cancel_batch_api(client, "job") == ["batch_sim000002"]


def interrupt() -> None:
    raise KeyboardInterrupt


# -- adopting what a killed run left ---------------------------------------------------------


def test_a_batch_created_but_not_recorded_before_a_kill_is_found_and_adopted(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    file_id = upload(sim, tasks(6))
    batch = create(sim, file_id)
    leave_state(sim, client, tasks(6), uploads=[(file_id, batch.created_at)])
    with caplog.at_level(logging.INFO, logger="aita.batch_api"):
        result = run(client, tasks(6))
    assert [r.result for r in result.task_results] == answers(6)
    stats = sim.batch_api.stats
    assert (stats.uploads, stats.batches_created) == (1, 1)  # adopted, not created again
    assert f"submitted batch {batch.id} (6 requests)" in caplog.messages


def test_a_batch_is_looked_for_back_to_five_minutes_before_its_upload(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    file_id = upload(sim, tasks(2))
    create(sim, file_id)
    newer = create(sim, upload(sim, tasks(1, prefix="other")))  # listed first
    leave_state(sim, client, tasks(2), uploads=[(file_id, newer.created_at + 300)])
    run(client, tasks(2))
    assert sim.batch_api.stats.batches_created == 2  # found: not created again


def test_batches_older_than_five_minutes_before_the_upload_are_not_looked_through(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    file_id = upload(sim, tasks(2))
    create(sim, file_id)
    newer = create(sim, upload(sim, tasks(1, prefix="other")))
    leave_state(sim, client, tasks(2), uploads=[(file_id, newer.created_at + 301)])
    result = run(client, tasks(2))
    assert [r.result for r in result.task_results] == answers(2)
    assert sim.batch_api.stats.batches_created == 3  # not found: created from the upload


def test_an_upload_whose_batch_was_never_created_is_created_not_uploaded_again(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    file_id = upload(sim, tasks(3))
    leave_state(sim, client, tasks(3), uploads=[(file_id, 0.0)])
    result = run(client, tasks(3))
    assert [r.result for r in result.task_results] == answers(3)
    stats = sim.batch_api.stats
    assert (stats.uploads, stats.batches_created) == (1, 1)
    assert not STATE.exists()


def test_an_upload_that_asks_nothing_needed_now_is_dropped(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    file_id = upload(sim, tasks(3))
    leave_state(sim, client, tasks(3), uploads=[(file_id, 0.0)])
    result = run(client, tasks(3, prefix="edited"))
    assert [r.result for r in result.task_results] == answers(3, "edited")
    stats = sim.batch_api.stats
    assert (stats.uploads, stats.batches_created) == (2, 1)
    assert not STATE.exists() and not FOLDER.exists()


def test_a_batch_the_provider_failed_names_its_first_three_reasons(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    file_id = upload(sim, tasks(4), url="/v1/embeddings")  # every line refused
    leave_state(sim, client, tasks(4), uploads=[(file_id, 0.0)])
    result = run(client, tasks(4), max_rounds=1)
    refused = "; ".join(["url must be /v1/chat/completions"] * 3)
    assert [r.error for r in result.task_results] == [
        f"provider unavailable: not answered (the batch failed: {refused})"
    ] * 4


def test_a_state_file_of_another_server_or_unreadable_is_set_aside(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    leave_state(sim, client, tasks(2), batches=["batch_elsewhere"], base_url="http://other/v1")
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        assert cancel_batch_api(client, "job") == []
        assert run(client, tasks(2)).success_rate == 100.0
    assert (
        f"{STATE} holds batches of http://other/v1, not {sim.base_url}; starting without them"
    ) in caplog.messages
    STATE.parent.mkdir(exist_ok=True)
    STATE.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        assert cancel_batch_api(client, "job") == []
        assert run(client, tasks(3)).success_rate == 100.0
    unreadable = [m for m in caplog.messages if m.startswith(f"{STATE} is unreadable (")]
    assert len(unreadable) == 2 and unreadable[0].endswith("); starting without it")
    assert sim.batch_api.stats.cancels == 0


def test_a_keys_file_that_does_not_read_uses_none_of_its_batchs_answers(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    batch = create(sim, upload(sim, tasks(2)))
    leave_state(sim, client, tasks(2), batches=[batch.id])
    (FOLDER / "k.keys.jsonl").write_text("not json\n")
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        result = run(client, tasks(2))
    assert [r.result for r in result.task_results] == answers(2)
    assert sim.batch_api.stats.batches_created == 2  # asked again
    assert caplog.messages[0].startswith("k.keys.jsonl: unreadable (")
    assert caplog.messages[0].endswith("); its answers are not used")
    assert "invalid literal" in caplog.messages[0]  # why


# -- cancelling ------------------------------------------------------------------------------


def test_cancel_stops_the_open_batches_and_those_made_from_recorded_uploads(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    recorded = create(sim, upload(sim, tasks(2)))
    file_id = upload(sim, tasks(2))
    unrecorded = create(sim, file_id)
    never_created = upload(sim, tasks(2))
    leave_state(
        sim,
        client,
        tasks(2),
        batches=["batch_unknown", recorded.id],
        uploads=[(file_id, unrecorded.created_at), (never_created, 0.0)],
    )
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        cancelled = cancel_batch_api(client, "job", checkpoint_dir=CHECKPOINTS)
    assert cancelled == [recorded.id, unrecorded.id]
    assert sim.batch_api.stats.cancels == 3
    assert caplog.messages == [
        "could not cancel batch batch_unknown: model not found (HTTP 404): cancel a batch: "
        "No batch found with id 'batch_unknown'"
    ]


def test_cancel_without_a_state_file_cancels_nothing(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    assert cancel_batch_api(client_for(sim, model=MODEL), "job") == []
    assert sim.batch_api.stats.cancels == 0


# -- what is not submitted -------------------------------------------------------------------


class Broken(SimpleLLMTask):
    def build_messages(self) -> list[LLMMessage]:
        raise ValueError("no messages today")


def test_a_task_that_cannot_build_its_request_fails_alone(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    first, second = tasks(2)
    result = run(client_for(sim, model=MODEL), [first, Broken("broken", "x"), second])
    assert [r.success for r in result.task_results] == [True, False, True]
    assert "no messages today" in (result.task_results[1].error or "")
    assert sim.batch_api.stats.uploaded_requests == 2


def test_a_request_over_a_files_byte_limit_fails_alone(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    long = SimpleLLMTask("long", "x" * 2000)
    result = run(client, [*tasks(2), long], max_bytes_per_file=1000)
    assert [r.success for r in result.task_results] == [True, True, False]
    error = result.task_results[2].error or ""
    assert re.fullmatch(r"request refused: the request is \d{4} bytes, over a file's limit", error)
    assert result.task_results[2].request_key == key_of(client, long)
    assert sim.batch_api.stats.uploaded_requests == 2


def test_a_request_as_long_as_a_files_limit_is_sent(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    seen: list[bytes] = []
    clock_of(sim).at[1] = lambda: seen.extend(f.data for f in sim.batch_api._files.values())
    run(client, tasks(1))
    result = run(client, tasks(3, prefix="tusk"), max_bytes_per_file=len(seen[0]))
    assert result.success_rate == 100
    assert sim.batch_api.stats.batches_created == 1 + 3


def test_a_request_no_json_line_can_hold_fails_alone(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    first, second = tasks(2)
    odd = SimpleLLMTask("odd", "x", extra=object())
    result = run(client, [first, odd, second])
    assert [r.success for r in result.task_results] == [True, False, True]
    failed = result.task_results[1]
    assert "not JSON serializable" in (failed.error or "")
    assert failed.request_key == key_of(client, odd)  # what it asked, as any failed task says
    assert sim.batch_api.stats.uploaded_requests == 2


def test_files_are_cut_at_the_byte_limit(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    seen: list[bytes] = []
    clock_of(sim).at[1] = lambda: seen.extend(f.data for f in sim.batch_api._files.values())
    run(client, tasks(1))
    line = len(seen[0])  # one request line, as uploaded; "tusk" is as long as "task"
    assert run(client, tasks(7, prefix="tusk"), max_bytes_per_file=3 * line).success_rate == 100
    batches = sorted(sim.batch_api._batches.values(), key=lambda b: b.id)
    assert [len(b.requests) for b in batches] == [1, 3, 3, 1]  # each file as full as it can be


def test_zero_limits_and_rounds_count_as_one(simulator: SimulatorFactory) -> None:
    sim = provider(simulator, failure_rate=1.0)
    result = run(client_for(sim, model=MODEL), tasks(3), max_requests_per_file=0, max_rounds=0)
    assert not any(r.success for r in result.task_results)
    assert sim.batch_api.stats.batches_created == 3  # one request per file, one round


def test_items_the_provider_is_down_for_go_again_for_at_most_max_rounds(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, failure_rate=1.0, failure_status=503)  # spends no retry
    result = run(client_for(sim, model=MODEL), tasks(2), max_rounds=3)
    assert [r.error for r in result.task_results] == [
        "provider unavailable (HTTP 503): simulated error"
    ] * 2
    assert sim.batch_api.stats.batches_created == 3


def test_a_resumed_run_waits_for_its_carried_batch_before_counting_rounds(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator, failure_rate=1.0, failure_status=503)
    client = client_for(sim, model=MODEL)
    clock_of(sim).at[1] = interrupt
    with pytest.raises(KeyboardInterrupt):
        run(client, tasks(2), max_rounds=2)
    result = run(client, tasks(2), max_rounds=2)
    assert not any(r.success for r in result.task_results)
    assert sim.batch_api.stats.batches_created == 3  # the carried one, then two rounds


def test_tasks_with_dependencies_or_repeated_ids_are_refused_before_any_call(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    dependent = SimpleLLMTask("b", "x")
    dependent.dependencies = ["a"]  # type: ignore[misc]
    with pytest.raises(TaskGraphError) as raised:
        run(client, [SimpleLLMTask("a", "x"), dependent])
    assert str(raised.value) == (
        "task 'b' has dependencies: the Batch API runs independent tasks "
        "(use execute_batch for task graphs)"
    )
    with pytest.raises(TaskGraphError, match="duplicate task id: 'a'"):
        run(client, [SimpleLLMTask("a", "x"), SimpleLLMTask("a", "y")])
    assert sim.batch_api.stats.uploads == 0


def test_a_provider_gone_before_the_upload_fails_the_run_resumably(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own retries of the upload, without their seconds of backoff.
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", 0.001)
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    sim.start_outage(3600, kind="reset")
    with pytest.raises(RunFailed) as raised:
        run(client, tasks(2))
    message = str(raised.value)
    assert message.startswith(f"upload a batch file: cannot reach {sim.base_url}: ")
    assert message.endswith("; what was submitted is collected by the next run")


def test_cancel_while_the_provider_is_down_raises_and_keeps_the_batches_on_record(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    batch = create(sim, upload(sim, tasks(2)))
    leave_state(sim, client, tasks(2), batches=[batch.id])
    sim.start_outage(3600, kind="429")
    with pytest.raises(RateLimited, match=r"\(HTTP 429\): cancel a batch: too many requests$"):
        cancel_batch_api(client, "job")
    leave_state(sim, client, tasks(2), batches=[batch.id], uploads=[("file-x", 0.0)])
    with pytest.raises(RateLimited, match=r"\(HTTP 429\): list batches: too many requests$"):
        cancel_batch_api(client, "job")
    sim.start_outage(0)
    assert cancel_batch_api(client, "job") == [batch.id]


def test_an_upload_whose_file_is_gone_at_the_provider_is_submitted_again(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    leave_state(sim, client, tasks(2), uploads=[("file-gone", 0.0)])
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        result = run(client, tasks(2))
    assert [r.result for r in result.task_results] == answers(2)
    assert (
        "file-gone: model not found (HTTP 404): create a batch: No such File object: file-gone; "
        "submitting again"
    ) in caplog.messages
    assert sim.batch_api.stats.batches_created == 1
    assert not STATE.exists()


def test_a_control_call_that_times_out_says_which_and_after_how_long(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", 0.001)
    sim = provider(simulator)
    with silent_server() as (url, connections):
        client = OpenAICompatibleClient(api_key=TEST_KEY, model=MODEL, base_url=url, timeout=0.05)
        leave_state(sim, client, tasks(1), batches=["batch_1"], base_url=url)
        with pytest.raises(ProviderTimeout) as raised:
            cancel_batch_api(client, "job")
        assert len(connections) == 5  # the call and the SDK's 4 retries
    assert str(raised.value) == f"timed out: cancel a batch: no response within 0.05s from {url}"


def test_a_first_run_that_does_not_resume_starts_clean_and_quietly(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        result = run(client, tasks(2), resume_from_checkpoint=False)
        assert [r.result for r in result.task_results] == answers(2)
        again = run(client, tasks(2), resume_from_checkpoint=False)  # asked again, journal too
    assert [r.from_checkpoint for r in again.task_results] == [False, False]
    assert sim.batch_api.stats.uploaded_requests == 4
    assert caplog.text == ""


def test_a_carried_batch_whose_other_answers_the_journal_has_by_now(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    clock_of(sim).at[1] = interrupt
    with pytest.raises(KeyboardInterrupt):
        run(client, tasks(4))
    live = ParallelLLMExecutor(client, checkpoint_dir="checkpoints", show_progress=False)
    live.execute_batch(tasks(2), checkpoint_name="job")  # two answered one by one meanwhile
    result = run(client, tasks(4))
    assert [r.result for r in result.task_results] == answers(4)
    assert [r.source for r in result.task_results][:2] == ["journal", "journal"]
    assert (sim.batch_api.stats.batches_created, sim.stats.requests) == (1, 2)


def test_by_default_five_rounds_each_of_a_24h_batch(simulator: SimulatorFactory) -> None:
    sim = provider(simulator, failure_rate=1.0)
    result = run(client_for(sim, model=MODEL), tasks(1))
    assert [r.retry_count for r in result.task_results] == [4]
    batches = sdk_of(sim).batches.list().data
    assert [b.completion_window for b in batches] == ["24h"] * 5


def test_the_journal_marks_the_run_with_its_number_of_tasks(simulator: SimulatorFactory) -> None:
    sim = provider(simulator)
    result = run(client_for(sim, model=MODEL), tasks(3))
    assert result.checkpoint_path is not None
    lines = [json.loads(line) for line in result.checkpoint_path.read_text().splitlines()]
    assert [line["tasks"] for line in lines if "run" in line] == [3]


class NoSDK:
    """A client of another kind (a custom one, a test double): it has no OpenAI SDK."""

    model = MODEL
    base_url = "http://127.0.0.1:1/v1"


def test_a_client_without_the_openai_sdk_is_refused_saying_which_it_needs() -> None:
    message = (
        "the Batch API needs an OpenAI-compatible client (create_openrouter_client), not NoSDK"
    )
    with pytest.raises(ConfigError) as raised:
        run_via_batch_api(NoSDK(), tasks(1))  # type: ignore[arg-type]
    assert str(raised.value) == message
    with pytest.raises(ConfigError) as raised:
        cancel_batch_api(NoSDK(), "job")  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_a_state_file_that_cannot_be_read_at_all_is_set_aside(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = provider(simulator)
    STATE.mkdir(parents=True)  # there, but no file: reading it is an OSError
    with caplog.at_level(logging.WARNING, logger="aita.batch_api"):
        assert cancel_batch_api(client_for(sim, model=MODEL), "job") == []
    (warning,) = caplog.messages
    assert warning.startswith(f"{STATE} is unreadable (") and "Is a directory" in warning


def test_every_upload_a_killed_run_left_is_adopted_or_created(
    simulator: SimulatorFactory,
) -> None:
    """Three uploads: the first two with a batch the run never recorded, the middle one without;
    each covers its own tasks. None of them is uploaded again."""
    sim = provider(simulator)
    client = client_for(sim, model=MODEL)
    task_list = tasks(6)
    parts = [task_list[0:2], task_list[2:4], task_list[4:6]]
    files = [upload(sim, part) for part in parts]
    first, last = create(sim, files[0]), create(sim, files[2])
    FOLDER.mkdir(parents=True)
    uploads = []
    for n, (part, file_id, since) in enumerate(
        zip(parts, files, [first.created_at, 0.0, last.created_at], strict=True)
    ):
        keys = f"{n}.keys.jsonl"
        (FOLDER / keys).write_text(
            "".join(json.dumps([t.task_id, key_of(client, t)]) + "\n" for t in part)
        )
        uploads.append(
            {"input_file_id": file_id, "keys": keys, "requests": 2, "uploaded_at": since}
        )
    state = {"aita_batch_api": 1, "name": "job", "base_url": sim.base_url, "uploads": uploads}
    STATE.write_text(json.dumps(state))
    result = run(client, task_list)
    assert [r.result for r in result.task_results] == answers(6)
    stats = sim.batch_api.stats
    assert (stats.uploads, stats.batches_created) == (3, 3)  # the middle one's batch made now


def test_the_metrics_count_every_task_and_the_time_the_run_took(
    simulator: SimulatorFactory,
) -> None:
    sim = provider(simulator)
    before = time.perf_counter()
    metrics = run(client_for(sim, model=MODEL), [*tasks(2), Broken("broken", "x")]).metrics
    took = time.perf_counter() - before
    assert (metrics.total_tasks, metrics.completed_tasks, metrics.failed_tasks) == (3, 2, 1)
    assert 0 < metrics.wall_time <= took
