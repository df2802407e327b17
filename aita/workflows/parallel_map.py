"""``parallel_map_with_delay``: any function over a list, on threads, results in input order.

    results = parallel_map_with_delay(process_item, items, max_workers=3,
                                      delay_range=(0.1, 0.5), prefix="Processed")

Threads, not processes: the work this is for (API calls) waits on the network, and threads need
no pickling. A random pause between submissions spreads the first calls out. A call that raises
does not lose the batch: its place in the results holds the exception (and it is logged), like
``asyncio.gather(..., return_exceptions=True)``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("aita.workflows")


def parallel_map_with_delay(
    func: Callable[..., T],
    items: Iterable[Any],
    max_workers: int | None = None,
    delay_range: tuple[float, float] = (0.1, 0.5),
    **kwargs: Any,
) -> list[T | Exception]:
    """``func(item, **kwargs)`` for every item; ``max_workers`` None means Python's default."""
    low, high = delay_range
    if not 0 <= low <= high:
        raise ValueError(
            f"delay_range must be (low, high) with 0 <= low <= high, got {delay_range}"
        )
    items = list(items)
    futures: list[Future[T]] = []
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="aita-map")
    try:
        for index, item in enumerate(items):
            if index:
                time.sleep(random.uniform(low, high))
            futures.append(pool.submit(func, item, **kwargs))
        results: list[T | Exception] = []
        for index, future in enumerate(futures):
            try:
                results.append(future.result())
            except Exception as error:
                log.warning(
                    "item %d (%r) failed: %s: %s", index, items[index], type(error).__name__, error
                )
                results.append(error)
        return results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
