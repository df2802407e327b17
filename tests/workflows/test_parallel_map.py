"""parallel_map_with_delay: input order, real concurrency, per-item failures."""

from __future__ import annotations

import threading
import time

import pytest

from aita import parallel_map_with_delay


def test_results_keep_input_order_with_mixed_latencies() -> None:
    def slow_for_small(n: int, prefix: str = "") -> str:
        time.sleep(0.02 * (5 - n))
        return f"{prefix}{n}"

    results = parallel_map_with_delay(
        slow_for_small, range(5), max_workers=5, delay_range=(0, 0.001), prefix="#"
    )
    assert results == ["#0", "#1", "#2", "#3", "#4"]


def test_items_run_concurrently() -> None:
    running, peak = 0, 0
    lock = threading.Lock()

    def work(_: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1

    parallel_map_with_delay(work, range(6), max_workers=3, delay_range=(0, 0))
    assert peak == 3


def test_a_failing_item_is_reported_in_its_place() -> None:
    def invert(n: int) -> float:
        return 1 / n

    results = parallel_map_with_delay(invert, [1, 0, 2], delay_range=(0, 0))
    assert results[0] == 1.0 and results[2] == 0.5
    assert isinstance(results[1], ZeroDivisionError)


def test_submissions_are_spaced_by_the_delay() -> None:
    starts: list[float] = []
    parallel_map_with_delay(
        lambda _: starts.append(time.monotonic()), range(4), delay_range=(0.05, 0.05)
    )
    assert starts[-1] - starts[0] >= 3 * 0.05


def test_bad_delay_range_is_refused() -> None:
    with pytest.raises(ValueError, match="delay_range"):
        parallel_map_with_delay(str, [1], delay_range=(0.5, 0.1))
