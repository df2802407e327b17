"""A Ray Data driver in a process of its own, for the Dataset test (so the test process, where
the simulator answers, is not the one running Ray Data's streaming executor).

python -m tests.support.ray_dataset_runner RAY_ADDRESS BASE_URL ROWS RATE OUT_JSON

Runs ROWS questions through ``LLMTaskMapper`` on 2 mappers under one ``shared_limit(RATE)``
and writes every output row (id, answer, error) to OUT_JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ray
import ray.data

from aita.engine import LLMTask, SimpleLLMTask
from aita.files import write_json_atomic
from aita.workflows.ray_batch import ClientSpec, LLMTaskMapper, shared_limit
from tests.support.doubles import TEST_KEY


def ask(row: dict[str, Any]) -> LLMTask:
    """A row of the dataset as a task (module-level: Ray pickles it by name)."""
    return SimpleLLMTask(str(row["id"]), str(row["question"]))


def main() -> None:
    address, base_url, rows, rate, out = sys.argv[1:6]
    ray.init(address=address, logging_level="WARNING")
    try:
        limit = shared_limit(float(rate), holders=2)
        client = ClientSpec(base_url, "test/model", TEST_KEY, timeout=10)
        ds = ray.data.from_items([{"id": f"d{i}", "question": f"q {i}"} for i in range(int(rows))])
        answered = ds.map_batches(
            LLMTaskMapper,
            fn_constructor_kwargs={"make_task": ask, "client": client, "limit": limit},
            concurrency=2,
            batch_size=20,
        ).take_all()
    finally:
        ray.shutdown()
    write_json_atomic(
        Path(out),
        [{"id": str(r["id"]), "answer": r["answer"], "error": r["error"]} for r in answered],
    )


if __name__ == "__main__":
    main()
