"""The parts of ``--ray`` that need no cluster: the shared schedule on a fake clock, blocks that
keep their numbers across a resume, the blocks' metrics as one run's, the command's refusals,
and the default install never importing Ray. The cluster runs are in test_batch_run_ray.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aita.cli import main
from aita.engine import ExecutionMetrics
from aita.workflows.batchfile import parse_request_line
from aita.workflows.ray_batch import ClusterRateLimiter, LimiterSchedule, blocks_of, merged
from tests.support.doubles import FakeClock
from tests.support.ray_cluster import free_ports

ROOT = Path(__file__).resolve().parents[2]


def test_the_schedule_spaces_every_start_one_interval_apart_whoever_asks() -> None:
    clock = FakeClock()
    schedule = LimiterSchedule(20, clock=clock)
    delays = [schedule.reserve(0, 0.0)[0] for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20])
    clock.sleep(1.0)  # idle time banks no burst
    assert [schedule.reserve(0, 0.0)[0] for _ in range(2)] == pytest.approx([0.0, 0.05])


def test_a_pause_moves_every_later_slot_behind_it() -> None:
    clock = FakeClock()
    schedule = LimiterSchedule(10, clock=clock)
    schedule.reserve(0, 0.0)
    schedule.pause(2.0)
    assert schedule.reserve(0, 0.0)[0] == pytest.approx(2.0)
    assert schedule.reserve(0, 0.0)[0] == pytest.approx(2.1)


def test_tokens_reserve_the_budget_and_a_correction_gives_them_back() -> None:
    clock = FakeClock()
    schedule = LimiterSchedule(None, clock=clock)
    assert schedule.reserve(1000, 100.0)[0] == 0.0  # 1000 tokens at 100/s: 10 s of budget
    assert schedule.reserve(1000, 100.0)[0] == pytest.approx(10.0)
    schedule.correct(-5.0)  # the second call used half its estimate
    assert schedule.reserve(0, 0.0)[0] == pytest.approx(15.0)


def test_a_cut_applies_at_once_and_a_raise_waits_for_the_hold() -> None:
    clock = FakeClock()
    schedule = LimiterSchedule(20, raise_hold=2.0, clock=clock)
    assert schedule.set_rate(14)[0] == 14  # a 429 somewhere: everyone slows
    clock.sleep(1.0)
    assert schedule.set_rate(16)[0] == 14  # another executor's raise, too soon
    clock.sleep(1.5)
    rate, changed = schedule.set_rate(16)
    assert (rate, changed) == (16, clock())
    assert schedule.reserve(0, 0.0)[1:3] == (16, clock())


def lines(count: int) -> list[object]:
    raw = [json.dumps({"custom_id": f"c{i}", "prompt": "q"}).encode() for i in range(count)]
    return [parse_request_line(r, i + 1) for i, r in enumerate(raw)]


def test_blocks_are_numbered_from_the_first_request_so_a_resume_keeps_their_journals() -> None:
    whole = list(blocks_of(lines(120), 0, 50, "job"))  # type: ignore[arg-type]
    assert [(b.number, b.first, len(b.lines)) for b in whole] == [
        (0, 0, 50),
        (1, 50, 50),
        (2, 100, 20),
    ]
    resumed = list(blocks_of(lines(120)[70:], 70, 50, "job"))  # type: ignore[arg-type]
    assert [(b.number, b.first, len(b.lines)) for b in resumed] == [(1, 70, 30), (2, 100, 20)]
    assert resumed[0].checkpoint_name == whole[1].checkpoint_name == "job-block000001"
    assert [line.custom_id for line in resumed[0].lines] == [f"c{i}" for i in range(70, 100)]


def test_the_blocks_metrics_add_up_to_one_runs() -> None:
    a = ExecutionMetrics(requests=3, total_tokens=30, total_cost=0.5, cost_by_model={"m": 0.5})
    b = ExecutionMetrics(requests=2, total_tokens=20, total_cost=0.25, cost_by_model={"m": 0.25})
    a.completed_tasks, b.completed_tasks, a.wall_time = 3, 2, 99.0
    total = merged([a, b], wall_time=5.0)
    assert (total.requests, total.total_tokens, total.total_cost) == (5, 50, 0.75)
    assert total.cost_by_model == {"m": 0.75}
    assert (total.wall_time, total.throughput) == (5.0, 1.0)


def requests_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "prompt": "q"}) + "\n")
    return path


def test_ray_without_an_address_says_where_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code = main(["batch", "run", str(requests_file(tmp_path)), "-o", "out.jsonl", "--ray"])
    assert code == 2
    assert "RAY_ADDRESS" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("flag", ["--dry-run", "--batch-api"])
def test_ray_refuses_what_it_cannot_do(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["batch", "run", str(requests_file(tmp_path)), "-o", "o.jsonl", "--ray", "auto", flag]
    )
    assert code == 2
    assert f"--ray: not with {flag}" in capsys.readouterr().err


def test_the_default_install_never_imports_ray() -> None:
    probe = (
        "import sys, aita, aita.engine, aita.workflows.batchfile, aita.cli\n"
        "from aita.cli import main\n"
        "try:\n    main(['batch', 'run', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_block_size_belongs_to_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["batch", "run", str(requests_file(tmp_path)), "-o", "o.jsonl", "--block-size", "9"]
    )
    assert code == 2
    assert "--block-size: only with --ray" in capsys.readouterr().err


def test_an_address_nothing_answers_at_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    (port,) = free_ports(1)  # bound a moment ago, closed: refused
    requests = str(requests_file(tmp_path))
    code = main(["batch", "run", requests, "-o", "o.jsonl", "--ray", f"127.0.0.1:{port}"])
    assert code == 2
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in capsys.readouterr().err


class DirectLimiter(ClusterRateLimiter):
    """``ClusterRateLimiter`` calling its schedule in this process, each answer ``latency``
    late on a fake clock; ``lost`` makes every call fail as a dead actor's would."""

    def __init__(self, schedule: LimiterSchedule, clock: FakeClock, latency: float) -> None:
        super().__init__(None, schedule.rate, share=0.25, sleep=clock.sleep, wall=clock)
        self._clock = clock
        self.schedule, self.fake, self.latency, self.lost = schedule, clock, latency, False

    def _call(self, method: str, *args: Any) -> Any:
        if self.lost:
            self._fall_back(TimeoutError())
            return None
        answer = getattr(self.schedule, method)(*args)
        self.fake.sleep(self.latency)
        return answer


def test_a_start_is_timed_from_its_reservation_not_from_the_answers_arrival() -> None:
    clock = FakeClock()
    limiter = DirectLimiter(LimiterSchedule(10, clock=clock, wall=clock), clock, latency=0.03)
    starts = []
    for _ in range(4):
        limiter.acquire()
        starts.append(clock())
    # reserved at 0, 0.03, 0.1+: the answers' 30 ms are not added to the waits
    assert starts == pytest.approx([0.03, 0.1, 0.2, 0.3])


def test_the_actor_lost_the_limiter_paces_alone_at_its_share() -> None:
    clock = FakeClock()
    limiter = DirectLimiter(LimiterSchedule(8, clock=clock, wall=clock), clock, latency=0.0)
    limiter.acquire()
    limiter.lost = True
    limiter.acquire()
    assert not limiter.shared and limiter.rate == 2.0  # a quarter of 8/s
    before = clock()
    limiter.acquire()
    assert clock() - before == pytest.approx(0.5, rel=0.1)  # its share, less the headroom
