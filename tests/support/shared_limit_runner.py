"""One of several processes sharing a provider, for the shared-limit tests.

python -m tests.support.shared_limit_runner BASE_URL REDIS_URL|local TASKS PREFIX OUT_JSON

Paces at 20 requests/s: through Redis (``redis_url=``: the executor's shared limiter, named
after the provider and model, as every process derives it) or, with ``local``, on its own.
Touches ``OUT_JSON.started`` when its first task starts; writes what it did to ``OUT_JSON`` at
the end (wall-clock times, comparable between processes on one machine).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from aita.engine import (
    ExponentialBackoff,
    ParallelLLMExecutor,
    SimpleLLMTask,
    TaskResult,
    create_openrouter_client,
)
from aita.files import write_json_atomic

RATE = 20.0
WORKERS = 8


def main() -> None:
    base_url, redis_url, count, prefix, out = sys.argv[1:6]
    client = create_openrouter_client(api_key="sk-runner", base_url=base_url, timeout=10)
    executor = ParallelLLMExecutor(
        client,
        max_workers=WORKERS,
        rate_limit=RATE,
        redis_url=None if redis_url == "local" else redis_url,
        enable_checkpointing=False,
        show_progress=False,
        max_retries=8,
        backoff=ExponentialBackoff(initial=0.05),
    )
    started: list[float] = []
    finished: list[float] = []

    def on_start(_: object) -> None:
        if not started:
            started.append(time.time())
            Path(out + ".started").touch()

    def on_complete(_: TaskResult) -> None:
        finished.append(time.time())

    tasks = [SimpleLLMTask(f"{prefix}{i:04d}", f"{prefix} {i}") for i in range(int(count))]
    result = executor.execute_batch(tasks, on_task_start=on_start, on_task_complete=on_complete)
    m = result.metrics
    write_json_atomic(
        Path(out),
        {
            "first_start": min(started),
            "finished": sorted(finished),
            "own_answers": sum(
                r.success and r.result == f"[sim] {prefix} {i}"
                for i, r in enumerate(result.task_results)
            ),
            "requests": m.requests,
            "rate_limited": m.rate_limited_responses,
        },
    )


if __name__ == "__main__":
    main()
