"""The checkpoint journal: round trips, torn tails, foreign files, names that try to escape."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import string
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aita.engine import Checkpoint, CheckpointJournal, CheckpointManager, TaskRecord, TaskResult
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
            value=st.none() | st.integers(-(10**6), 10**6) | st.lists(json_text, max_size=3),
            key=st.none() | st.text(string.hexdigits, min_size=1, max_size=64),
            simulated=st.booleans(),
            finish_reason=st.none() | st.sampled_from(["stop", "length"]),
            used_fallback=st.booleans(),
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


# -- what the mutants of the journal showed untested (scripts/mutation.py) -------------------------

ISO_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"
#: No record is longer (the journal's bound): a longer line is skipped unread.
MAX_LINE_BYTES = 64 * 1024 * 1024


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_checkpoints_go_to_the_checkpoints_folder_by_default() -> None:
    assert CheckpointManager().checkpoint_dir == Path("checkpoints")


def test_safe_names_keep_distinct_names_apart_and_stay_short() -> None:
    safe_name = CheckpointManager.safe_name
    assert safe_name("job-1_a") == "job-1_a"  # already safe: unchanged
    assert safe_name("a/b") != safe_name("a_b") == "a_b"
    assert re.fullmatch(r"a_b-[0-9a-f]{8}", safe_name("a/b"))
    assert re.fullmatch(r"batch-[0-9a-f]{8}", safe_name("../"))  # nothing left: "batch"
    assert len(safe_name("x" * 300)) == 120
    assert safe_name("x" * 120) == "x" * 120


def test_a_new_checkpoint_is_named_after_its_batch_and_second(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "deep" / "er")  # folders made as needed
    checkpoint = Checkpoint(name="job")
    path = manager.save(checkpoint)
    assert re.fullmatch(r"job_\d{8}_\d{6}\.checkpoint\.json", path.name)
    assert checkpoint.path == path
    assert re.fullmatch(ISO_TIME, checkpoint.created_at)
    assert manager.load(path).created_at == checkpoint.created_at


def test_a_checkpoints_creation_time_is_kept(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    path = manager.save(Checkpoint(name="job", created_at="2025-01-02T03:04:05"))
    assert manager.load(path).created_at == "2025-01-02T03:04:05"
    header = json.loads(path.read_bytes().splitlines()[0])
    assert header == {"aita_checkpoint": 2, "name": "job", "created_at": "2025-01-02T03:04:05"}


def test_checkpoint_files_are_for_their_owner_only(tmp_path: Path) -> None:
    """A journal holds prompts and answers: 0600 in a folder made 0700, whatever the umask."""
    umask = os.umask(0)
    try:
        path = CheckpointManager(tmp_path / "checkpoints").save(Checkpoint(name="job"))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_thousand_checkpoints_of_one_name_in_one_second_is_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = time.localtime()  # the clock stands still: however slow the machine, one second
    strftime = time.strftime
    monkeypatch.setattr(time, "strftime", lambda form, t=second: strftime(form, t))
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for n in range(1000):
        (tmp_path / f"job_{stamp}{f'_{n}' if n else ''}.checkpoint.json").touch()
    with pytest.raises(CheckpointError, match="cannot create a checkpoint file for 'job'"):
        CheckpointManager(tmp_path).save(Checkpoint(name="job"))


def test_a_new_journal_knows_its_file_and_where_its_valid_part_ends(tmp_path: Path) -> None:
    checkpoint = Checkpoint(name="job")
    with CheckpointManager(tmp_path).start_journal(checkpoint) as journal:
        assert checkpoint.path is not None and journal.path == checkpoint.path
        assert checkpoint.valid_bytes == checkpoint.path.stat().st_size > 0


def test_each_run_line_says_when_it_started_and_how_many_tasks_it_had(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="job")
    with manager.start_journal(checkpoint) as journal:
        journal.start_run(3)
        journal.append(TaskRecord("t0", succeeded=True, raw_response="x"))
        journal.start_run(5)
    assert checkpoint.path is not None
    lines = checkpoint.path.read_bytes().splitlines()
    assert re.fullmatch(rb'\{"run":"' + ISO_TIME.encode() + rb'","tasks":3\}', lines[1])
    loaded = manager.load(checkpoint.path)
    assert (loaded.runs, loaded.total_tasks) == ([3, 5], 5)


def test_a_version_1_header_holds_the_only_runs_size(tmp_path: Path) -> None:
    path = tmp_path / "old_20240101_000000.checkpoint.json"
    path.write_bytes(
        b'{"aita_checkpoint": 1, "name": "old", "total_tasks": 7}\n'
        b'{"task_id": "t0", "ok": true, "raw": "x"}\n'
    )
    loaded = CheckpointManager(tmp_path).load(path)
    assert (loaded.name, loaded.created_at, loaded.runs, loaded.total_tasks) == ("old", "", [7], 7)
    assert loaded.records["t0"].key is None  # no request key: it never matches a task


def test_a_header_that_is_not_an_aita_checkpoint_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "x.checkpoint.json"
    path.write_bytes(b'{"aita_checkpoint": 3, "name": "future"}\n')
    with pytest.raises(CheckpointError) as caught:
        CheckpointManager(tmp_path).load(path)
    assert str(caught.value) == f"{path}: not a readable aita checkpoint (not an aita checkpoint)"
    path.write_bytes(b'{"aita_checkpoint": 2, "name": "cut"}')
    with pytest.raises(CheckpointError) as caught:
        CheckpointManager(tmp_path).load(path)
    assert str(caught.value) == f"{path}: not a readable aita checkpoint (no complete header)"


def test_what_is_no_regular_file_or_not_there_is_refused_by_name(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    folder = tmp_path / "folder.checkpoint.json"
    folder.mkdir()
    with pytest.raises(CheckpointError) as caught:
        manager.load(folder)
    assert str(caught.value) == f"{folder}: not a regular file"
    missing = tmp_path / "missing.checkpoint.json"
    with pytest.raises(CheckpointError) as caught:
        manager.load(missing)
    assert str(caught.value) == f"{missing}: cannot read (No such file or directory)"


def test_a_clean_journal_loads_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path)
    path = manager.save(make_checkpoint(n=3))
    with caplog.at_level(logging.WARNING):
        loaded = manager.load(path)
    assert warnings_of(caplog) == []
    assert loaded.valid_bytes == path.stat().st_size


def test_invalid_records_are_counted_in_one_warning_and_run_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path)
    path = manager.save(make_checkpoint(n=1))
    with open(path, "ab") as handle:
        handle.write(b'{"task_id": "t1", "ok": "yes"}\n')  # strict: "yes" is no success
        handle.write(b'{"run": "2025-01-01T00:00:00", "tasks": 4}\n')
        handle.write(b"not json\n")
        handle.write(b'{"task_id": "t2", "ok": true, "raw": "fine"}\n')
        handle.write(b'{"task_id": "t3", "ok": tr')
    with caplog.at_level(logging.WARNING):
        loaded = manager.load(path)
    assert set(loaded.records) == {"t0", "t2"}
    assert loaded.runs == [1, 4]
    assert warnings_of(caplog) == [
        f"{path}: dropped a torn last record (killed mid-write)",
        f"{path}: skipped 2 invalid record(s); those tasks will run again",
    ]


def test_a_line_too_long_for_any_record_is_passed_over_and_appending_continues_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="job")
    checkpoint.records["t0"] = TaskRecord("t0", succeeded=True, raw_response="ok")
    path = manager.save(checkpoint)
    start, end = b'{"task_id":"longest","ok":true,"raw":"', b'"}\n'
    with open(path, "ab") as handle:  # the longest record there can be, then one longer
        handle.write(start + b"x" * (MAX_LINE_BYTES - len(start) - len(end)) + end)
        handle.write(b"not a record\n")
        handle.write(b'{"task_id":"big","ok":true,"raw":"' + b"x" * MAX_LINE_BYTES + b'"}\n')
        handle.write(b'{"task_id":"t1","ok":true,"raw":"fine"}\n')
        handle.write(b'{"task_id":"big2","ok":true,"raw":"' + b"x" * MAX_LINE_BYTES + b'"}\n')
        valid = handle.tell()
        handle.write(b'{"task_id":"t3","ok":tr')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        loaded = manager.load(path)
    assert set(loaded.records) == {"t0", "longest", "t1"}
    assert loaded.valid_bytes == valid
    assert warnings_of(caplog) == [
        f"{path}: dropped a torn last record (killed mid-write)",
        f"{path}: skipped 3 invalid record(s); those tasks will run again",
    ]
    del loaded.records["longest"]
    with manager.start_journal(loaded) as journal:  # the torn record is cut off first
        journal.append(TaskRecord("t2", succeeded=True, raw_response="later"))
    assert set(manager.load(path).records) == {"t0", "longest", "t1", "t2"}


def test_checkpoints_that_are_links_folders_or_fifos_are_not_listed(tmp_path: Path) -> None:
    real = [f"job_2025010{day}_000000.checkpoint.json" for day in range(1, 6)]
    for name in real:
        (tmp_path / name).write_text("{}")
    (tmp_path / "job_20250201_000000.checkpoint.json").symlink_to(tmp_path / real[0])
    (tmp_path / "job_20250202_000000.checkpoint.json").mkdir()
    os.mkfifo(tmp_path / "job_20250203_000000.checkpoint.json")
    listed = CheckpointManager(tmp_path).list_checkpoints("job")
    assert [p.name for p in listed] == sorted(real, reverse=True)


def test_the_latest_checkpoint_of_a_second_is_its_highest_number(tmp_path: Path) -> None:
    names = []
    for day in range(1, 6):
        stamp = f"2025010{day}_000000"
        names += [f"job_{stamp}", f"job_{stamp}_1", f"job_{stamp}_2"]
    for name in names:
        (tmp_path / f"{name}.checkpoint.json").write_text("{}")
    listed = [p.name for p in CheckpointManager(tmp_path).list_checkpoints("job")]
    expected = []
    for day in range(5, 0, -1):
        stamp = f"2025010{day}_000000"
        expected += [f"job_{stamp}_2", f"job_{stamp}_1", f"job_{stamp}"]
    assert listed == [f"{name}.checkpoint.json" for name in expected]


def test_cleanup_removes_every_checkpoint_of_one_name_only(tmp_path: Path) -> None:
    for name in ("a_20250101_000000", "a_20250102_000000", "b_20250101_000000"):
        (tmp_path / f"{name}.checkpoint.json").write_text("{}")
    manager = CheckpointManager(tmp_path)
    removed = manager.cleanup("a")
    assert sorted(p.name for p in removed) == [
        "a_20250101_000000.checkpoint.json",
        "a_20250102_000000.checkpoint.json",
    ]
    assert [p.name for p in manager.list_checkpoints()] == ["b_20250101_000000.checkpoint.json"]
    assert CheckpointManager(tmp_path / "none").cleanup() == []


def test_a_batch_continues_the_latest_journal_of_its_own_name_when_resuming(
    tmp_path: Path,
) -> None:
    manager = CheckpointManager(tmp_path)
    mine = manager.save(make_checkpoint("job", n=2))
    other = manager.save(make_checkpoint("other", n=1))
    other.rename(tmp_path / "other_29991231_000000.checkpoint.json")  # the newest of all
    resumed = manager.open_for_batch("job", resume=True)
    assert (resumed.path, set(resumed.records)) == (mine, {"t0", "t1"})
    fresh = manager.open_for_batch("job", resume=False)
    assert (fresh.name, fresh.path, fresh.records) == ("job", None, {})
    streamed, index = manager.open_for_stream("job", resume=True, index_dir=tmp_path / "idx")
    assert index is not None
    index.close()
    assert (streamed.path, streamed.runs) == (mine, [2])
    assert manager.open_for_stream("job", resume=False, index_dir=tmp_path / "idx") == (
        Checkpoint(name="job"),
        None,
    )


def test_an_unreadable_journal_is_left_alone_and_a_new_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path)
    path = tmp_path / "job_20250101_000000.checkpoint.json"
    path.write_bytes(b'{"some": "json"}\n')
    with caplog.at_level(logging.WARNING):
        batch = manager.open_for_batch("job", resume=True)
        stream, index = manager.open_for_stream("job", resume=True, index_dir=tmp_path / "idx")
    assert (batch.name, batch.path, stream.name, stream.path, index) == (
        "job",
        None,
        "job",
        None,
        None,
    )
    problem = f"{path}: not a readable aita checkpoint (not an aita checkpoint)"
    assert warnings_of(caplog) == [f"{problem}; starting a new checkpoint"] * 2
    assert list((tmp_path / "idx").iterdir()) == []  # the index started is gone
    assert path.read_bytes() == b'{"some": "json"}\n'


def test_the_journal_syncs_every_ten_records_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setattr(CheckpointJournal, "FSYNC_SECONDS", 0.0)
    manager = CheckpointManager(tmp_path)
    for journal in (
        manager.start_journal(Checkpoint(name="job")),
        CheckpointJournal(manager.save(Checkpoint(name="raw"))),
    ):
        synced.clear()
        for i in range(9):
            journal.append(TaskRecord(f"t{i}", succeeded=True, raw_response="x"))
        assert synced == []
        journal.append(TaskRecord("t9", succeeded=True, raw_response="x"))
        assert len(synced) == 1
        journal.close()


def test_the_sync_count_starts_again_after_each_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setattr(CheckpointJournal, "FSYNC_SECONDS", 0.0)
    manager = CheckpointManager(tmp_path)
    every = manager.start_journal(Checkpoint(name="every"), fsync_interval=1)
    synced.clear()
    for i in range(3):
        every.append(TaskRecord(f"t{i}", succeeded=True, raw_response="x"))
    assert len(synced) == 3
    fifth = manager.start_journal(Checkpoint(name="fifth"), fsync_interval=5)
    synced.clear()
    for i in range(9):
        fifth.append(TaskRecord(f"t{i}", succeeded=True, raw_response="x"))
    assert len(synced) == 1
    fifth.append(TaskRecord("t9", succeeded=True, raw_response="x"))
    assert len(synced) == 2
    every.close()
    fifth.close()


def test_after_close_the_journal_writes_nothing_anywhere(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="job")
    journal = manager.start_journal(checkpoint)
    journal.append(TaskRecord("t0", succeeded=True, raw_response="x"))
    journal.close()
    assert checkpoint.path is not None
    written = checkpoint.path.read_bytes()
    journal.append(TaskRecord("late", succeeded=True, raw_response="x"))  # a worker left behind
    journal.start_run(1)
    journal.close()
    assert checkpoint.path.read_bytes() == written
    assert capfd.readouterr() == ("", "")


def test_the_journal_syncs_again_once_a_full_second_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    journal = CheckpointManager(tmp_path).start_journal(Checkpoint(name="job"), fsync_interval=1)
    synced.clear()
    for moment in (100.5, 101.0, 101.5, 101.75, 102.0):
        now[0] = moment
        journal.append(TaskRecord(f"t{moment}", succeeded=True, raw_response="x"))
    assert len(synced) == 2  # at 101.0 and 102.0
    journal.close()


def test_a_journal_given_file_descriptor_0_still_records(tmp_path: Path) -> None:
    """A process started with its standard input closed (a service, ``<&-``) hands the journal
    descriptor 0: a valid one."""
    manager = CheckpointManager(tmp_path)
    path = manager.save(Checkpoint(name="job"))
    stdin = os.dup(0)
    os.close(0)
    try:
        journal = CheckpointJournal(path)
        journal.start_run(1)
        journal.append(TaskRecord("t0", succeeded=True, raw_response="x"))
        journal.close()
        journal.append(TaskRecord("late", succeeded=True, raw_response="x"))
    finally:
        os.dup2(stdin, 0)
        os.close(stdin)
    loaded = manager.load(path)
    assert (loaded.runs, set(loaded.records)) == ([1], {"t0"})


def test_a_torn_last_line_too_long_for_any_record_is_cut_before_appending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path)
    checkpoint = Checkpoint(name="job")
    checkpoint.records["t0"] = TaskRecord("t0", succeeded=True, raw_response="ok")
    path = manager.save(checkpoint)
    with open(path, "ab") as handle:  # killed while writing a line longer than any record
        handle.write(b'{"task_id":"big","ok":true,"raw":"' + b"x" * MAX_LINE_BYTES)
    with caplog.at_level(logging.WARNING):
        loaded = manager.load(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: dropped a torn last record (killed mid-write)"
    ]
    with manager.start_journal(loaded) as journal:
        journal.append(TaskRecord("t1", succeeded=True, raw_response="after"))
    assert set(manager.load(path).records) == {"t0", "t1"}


def kept_of(result: TaskResult) -> TaskRecord:
    """What the journal keeps of a result: a fallback or a failure is no success (a resume
    tries it again, and keeps its error); a combined call's member keeps its value if JSON can."""
    succeeded = result.success and not result.used_fallback
    value = None
    if succeeded and result.combined:
        try:
            json.dumps(result.result)
            value = result.result
        except TypeError:
            succeeded = False
    return TaskRecord(
        task_id=result.task_id,
        succeeded=succeeded,
        raw_response=result.raw_response,
        value=value,
        usage={
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.tokens,
            "cost": result.cost,
        },
        model=result.model,
        error=None if succeeded else result.error,
        error_type=None if succeeded else result.error_type,
        retry_count=result.retry_count,
        execution_time=result.execution_time,
        key=result.request_key,
        simulated=result.simulated,
        finish_reason=result.finish_reason,
        used_fallback=result.used_fallback,
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    results=st.lists(
        st.builds(
            TaskResult,
            task_id=st.text(min_size=1, max_size=30),
            outcome=st.sampled_from(["done", "flagged", "failed", "skipped", "cancelled"]),
            source=st.sampled_from(["call", "cache"]),
            result=st.none()
            | st.integers(-(10**6), 10**6)
            | st.lists(json_text, max_size=3)
            | st.just(object()),
            raw_response=st.none() | json_text,
            error=st.none() | json_text,
            error_type=st.none() | st.sampled_from(["RateLimited", "BadRequest"]),
            retry_count=st.integers(0, 50),
            execution_time=st.floats(0, 1000),
            tokens=st.integers(0, 10**6),
            prompt_tokens=st.integers(0, 10**6),
            completion_tokens=st.integers(0, 10**6),
            cost=st.floats(0, 100),
            model=st.none() | st.text(string.printable, max_size=20),
            combined=st.booleans(),
            simulated=st.booleans(),
            finish_reason=st.none() | st.sampled_from(["stop", "length"]),
            request_key=st.none() | st.text(string.hexdigits, min_size=1, max_size=64),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_a_finished_tasks_journal_line_is_the_record_it_keeps(
    tmp_path: Path, results: list[TaskResult]
) -> None:
    # A finished task is written from its result at once (append_result): the same bytes as
    # its record (append), so a journal reads back alike either way.
    by_result, by_record = tmp_path / "result.jsonl", tmp_path / "record.jsonl"
    by_result.write_bytes(b"")
    by_record.write_bytes(b"")
    with CheckpointJournal(by_result) as fast, CheckpointJournal(by_record) as slow:
        for result in results:
            fast.append_result(result)
            slow.append(kept_of(result))
    assert by_result.read_bytes() == by_record.read_bytes()
    by_result.unlink()
    by_record.unlink()
