"""The checkpoint journal: round trips, torn tails, foreign files, names that try to escape."""

from __future__ import annotations

import logging
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aita.engine import Checkpoint, CheckpointManager, TaskRecord
from aita.errors import CheckpointError


def make_checkpoint(name: str = "job", n: int = 3) -> Checkpoint:
    checkpoint = Checkpoint(name=name, runs=[n])
    for i in range(n):
        checkpoint.records[f"t{i}"] = TaskRecord(
            task_id=f"t{i}",
            succeeded=i % 2 == 0,
            raw_response=f"answer {i}" if i % 2 == 0 else None,
            usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cost": 0.001},
            error=None if i % 2 == 0 else "HTTP 500: boom",
            error_type=None if i % 2 == 0 else "ProviderUnavailable",
            retry_count=i,
            execution_time=0.5,
        )
    return checkpoint


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    original = make_checkpoint()
    path = manager.save(original)
    assert path.name.startswith("job_") and path.name.endswith(".checkpoint.json")
    loaded = manager.load(path)
    assert loaded.records == original.records
    assert (loaded.name, loaded.runs, loaded.total_tasks) == ("job", [3], 3)
    assert set(loaded.succeeded) == {"t0", "t2"} and set(loaded.failed) == {"t1"}


def test_a_later_record_supersedes_an_earlier_one(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="job")
    with manager.start_journal(checkpoint) as journal:
        journal.append(TaskRecord("t0", succeeded=False, error="boom"))
        journal.append(TaskRecord("t0", succeeded=True, raw_response="fine"))
    assert manager.load(checkpoint.path).records["t0"].succeeded  # type: ignore[arg-type]


def test_torn_last_line_is_dropped_and_cut_before_appending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path)
    path = manager.save(make_checkpoint(n=2))
    with open(path, "ab") as handle:
        handle.write(b'{"task_id": "t9", "ok": tr')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        loaded = manager.load(path)
    assert set(loaded.records) == {"t0", "t1"}
    assert "torn" in caplog.text
    with manager.start_journal(loaded) as journal:
        journal.append(TaskRecord("t9", succeeded=True, raw_response="ok"))
    assert set(manager.load(path).records) == {"t0", "t1", "t9"}


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b'{"some": "other json"}\n', b"\x00\x01\x02", b'["aita_checkpoint"]\n'],
)
def test_foreign_or_corrupt_file_raises_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "job_20250101_000000.checkpoint.json"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable aita checkpoint"):
        CheckpointManager(tmp_path).load(path)


def test_latest_checkpoint_is_found_by_name_only(tmp_path: Path) -> None:
    for name in (
        "job_20250101_000000",
        "job_20250102_000000",
        "job_20250102_000000_1",
        "job_extra_20250103_000000",
        "other_20250104_000000",
    ):
        (tmp_path / f"{name}.checkpoint.json").write_text("{}")
    manager = CheckpointManager(tmp_path)
    latest = manager.find_latest_checkpoint("job")
    assert latest is not None and latest.name == "job_20250102_000000_1.checkpoint.json"
    assert len(manager.list_checkpoints()) == 5
    assert manager.find_latest_checkpoint("missing") is None


def test_cleanup_keeps_the_newest_per_name(tmp_path: Path) -> None:
    for name in ("a_20250101_000000", "a_20250102_000000", "b_20250101_000000"):
        (tmp_path / f"{name}.checkpoint.json").write_text("{}")
    removed = CheckpointManager(tmp_path).cleanup(keep_latest=1)
    assert [p.name for p in removed] == ["a_20250101_000000.checkpoint.json"]


def test_two_checkpoints_in_one_second_do_not_collide(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    paths = {manager.save(make_checkpoint()) for _ in range(3)}
    assert len(paths) == 3


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(min_size=1, max_size=40))
def test_any_name_stays_inside_the_checkpoint_folder(tmp_path: Path, name: str) -> None:
    manager = CheckpointManager(tmp_path / "cp")
    path = manager.save(Checkpoint(name=name))
    assert path.parent == tmp_path / "cp"
    assert manager.find_latest_checkpoint(name) is not None
    path.unlink()


json_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.lists(
        st.builds(
            TaskRecord,
            task_id=st.text(min_size=1, max_size=30),
            succeeded=st.booleans(),
            raw_response=st.none() | json_text,
            usage=st.none() | st.fixed_dictionaries({"prompt_tokens": st.integers(0, 10**6)}),
            model=st.none() | st.text(string.printable, max_size=20),
            error=st.none() | json_text,
            error_type=st.none() | st.sampled_from(["RateLimited", "BadRequest"]),
            retry_count=st.integers(0, 50),
            execution_time=st.floats(0, 1000).map(lambda t: round(t, 4)),
        ),
        max_size=20,
        unique_by=lambda r: r.task_id,
    )
)
def test_round_trip_of_arbitrary_records(tmp_path: Path, records: list[TaskRecord]) -> None:
    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="prop", runs=[len(records)])
    checkpoint.records = {r.task_id: r for r in records}
    path = manager.save(checkpoint)
    assert manager.load(path).records == checkpoint.records
    path.unlink()


def test_the_journal_syncs_to_disk_on_close_and_after_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="job")
    journal = manager.start_journal(checkpoint, fsync_interval=5)
    synced.clear()  # creating the file synced its header
    monkeypatch.setattr(type(journal), "FSYNC_SECONDS", 0.0)
    for i in range(4):
        journal.append(TaskRecord(f"t{i}", succeeded=True, raw_response="x"))
    assert synced == []  # fewer than the interval: written, not yet synced
    journal.append(TaskRecord("t4", succeeded=True, raw_response="x"))
    assert len(synced) == 1  # the interval reached: synced
    journal.append(TaskRecord("t5", succeeded=True, raw_response="x"))
    journal.close()
    assert len(synced) == 2  # and on close
    assert set(manager.load(checkpoint.path).records) == {f"t{i}" for i in range(6)}  # type: ignore[arg-type]


def test_the_journal_syncs_at_most_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    journal = CheckpointManager(tmp_path).start_journal(Checkpoint(name="job"), fsync_interval=1)
    synced.clear()
    for i in range(50):  # far faster than one a second
        journal.append(TaskRecord(f"t{i}", succeeded=True, raw_response="x"))
    assert len(synced) <= 1
