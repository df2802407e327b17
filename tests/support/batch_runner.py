"""A batch in a child process, for tests that kill it.

python -m tests.support.batch_runner BASE_URL TASK_COUNT RESULTS_JSON
"""

from __future__ import annotations

import sys
from pathlib import Path

from aita.engine import (
    ExponentialBackoff,
    ParallelLLMExecutor,
    SimpleLLMTask,
    create_openrouter_client,
)
from aita.files import write_json_atomic

WORKERS = 8
CHECKPOINT_INTERVAL = 10


def main() -> None:
    base_url, count, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    client = create_openrouter_client(api_key="sk-runner", base_url=base_url, timeout=10)
    executor = ParallelLLMExecutor(
        client,
        max_workers=WORKERS,
        rate_limit=None,
        checkpoint_interval=CHECKPOINT_INTERVAL,
        checkpoint_dir="checkpoints",
        show_progress=False,
        max_retries=5,
        backoff=ExponentialBackoff(initial=0.01),
    )
    tasks = [SimpleLLMTask(f"t{i:05d}", f"task {i}") for i in range(count)]
    result = executor.execute_batch(tasks, checkpoint_name="crash")
    write_json_atomic(out, {r.task_id: r.result for r in result.task_results if r.success})


if __name__ == "__main__":
    main()
