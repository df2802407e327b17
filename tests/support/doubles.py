"""The test doubles every area's tests share: a client on the simulator, an executor with test
defaults, a fake clock, the tasks most tests run, and the subprocess runners' helpers."""

from __future__ import annotations

import base64
import bisect
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aita.engine import (
    CheckpointManager,
    ExponentialBackoff,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    SimpleLLMTask,
    TaskResult,
    create_openrouter_client,
)
from aita.simulator import ProviderSimulator

#: the repository's root
ROOT = Path(__file__).resolve().parents[2]

FAST_BACKOFF = ExponentialBackoff(initial=0.01, maximum=0.1)


def executor_for(client: Any, **kwargs: Any) -> ParallelLLMExecutor:
    options: dict[str, Any] = {
        "max_workers": 8,
        "rate_limit": None,
        "checkpoint_dir": "checkpoints",
        "show_progress": False,
        "backoff": FAST_BACKOFF,
    }
    options.update(kwargs)
    return ParallelLLMExecutor(client, **options)


def questions(n: int, prefix: str = "question") -> list[SimpleLLMTask]:
    return [SimpleLLMTask(f"q{i:04d}", f"{prefix} {i}") for i in range(n)]


def assert_own_answers_in_order(results: list[TaskResult], prefix: str = "question") -> None:
    assert [r.task_id for r in results] == [f"q{i:04d}" for i in range(len(results))]
    assert all(r.success for r in results), [r.error for r in results if not r.success][:3]
    assert [r.result for r in results] == [f"[sim] {prefix} {i}" for i in range(len(results))]


PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class FakeClock:
    """A clock that only moves when someone sleeps; ``time()`` is the wall clock it started at
    plus the seconds slept (the ``time`` module's three functions, for code that takes one)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.epoch = time.time()

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch + self.now

    def sleep(self, seconds: float, /) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def max_starts_in_window(starts: list[float], window: float = 1.0) -> int:
    starts = sorted(starts)
    eps = 1e-9  # float sums: a start at 1.0000000001 belongs to the next window
    return max(
        (bisect.bisect_left(starts, t + window - eps) - i for i, t in enumerate(starts)), default=0
    )


def tokens_in_window(starts: list[tuple[float, int]], window: float) -> int:
    return max(sum(n for t2, n in starts if t <= t2 < t + window - 1e-9) for t, _ in starts)


def interrupt_when(condition: Any) -> threading.Thread:
    """Ctrl-C in the main thread once ``condition()`` holds, as a user would press it."""
    main = threading.main_thread().ident
    assert main is not None

    def watch() -> None:
        deadline = time.monotonic() + 20
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def start_runner(base_url: str, count: int, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.batch_runner", base_url, str(count), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def check_saved_work(manager: CheckpointManager, at_least: int) -> int:
    """The journal left by a kill loads, and every task it says succeeded holds its own answer
    (none lost since the last kill: at least ``at_least`` of them). Returns how many."""
    latest = manager.find_latest_checkpoint("crash")
    assert latest is not None
    saved = manager.load(latest).succeeded
    for task_id, record in saved.items():
        assert record.raw_response == f"[sim] task {int(task_id[1:])}", task_id
    assert len(saved) >= at_least
    return len(saved)


TEST_KEY = "sk-test-key-not-secret"


SimulatorFactory = Callable[..., ProviderSimulator]


def client_for(sim: ProviderSimulator, **kwargs: object) -> OpenAICompatibleClient:
    return create_openrouter_client(api_key=TEST_KEY, base_url=sim.base_url, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server on 127.0.0.1 that takes every connection and never answers: its base URL, and
    the connections it took."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", accepted
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        listener.close()
