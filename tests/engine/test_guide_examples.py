"""Every code example of the users' guide runs as written, given a client.

The examples are read from ``docs/parallel-llm-execution-guide.md`` (a copy of the guide users
already have) and executed in order in one namespace, against the simulator over real HTTP.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aita.config import get_config
from aita.engine import BatchableLLMTask, CheckpointManager
from aita.errors import ProviderUnavailable, RateLimited
from aita.services.llm.base import LLMMessage
from aita.utils.llm_tasks import SimpleLLMTask
from tests.support.doubles import PNG_1PX, TEST_KEY, SimulatorFactory

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "parallel-llm-execution-guide.md"

#: Blocks that are not runnable Python on purpose: shell, and the "before" half of a migration.
NOT_PYTHON = {"Migration Guide/From Sequential to Parallel#0"}


def guide_examples() -> list[tuple[str, str]]:
    """(section/subsection#n, code) for every ```python block, in order."""
    examples: list[tuple[str, str]] = []
    section = subsection = ""
    counts: dict[str, int] = {}
    in_code, language, lines = False, "", list[str]()
    for line in GUIDE.read_text().splitlines():
        if line.startswith("```"):
            if in_code:
                if language == "python":
                    key = f"{section}/{subsection}"
                    examples.append((f"{key}#{counts.get(key, 0)}", "\n".join(lines)))
                    counts[key] = counts.get(key, 0) + 1
                in_code, lines = False, []
            else:
                in_code, language = True, line[3:].strip()
            continue
        if in_code:
            lines.append(line)
        elif line.startswith("### "):
            subsection = line[4:].strip()
        elif line.startswith("## "):
            section, subsection = line[3:].strip(), ""
    return examples


def answer_analysis_prompts(request: dict[str, Any]) -> str | None:
    """The guide's custom tasks parse JSON with 'difficulty' and 'reasoning'."""
    text = json.dumps(request["messages"])
    if "Analyze" in text:
        return json.dumps({"difficulty": "medium", "reasoning": "two-step problem", "text": "x"})
    return None


@pytest.fixture
def guide_namespace(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, Any]:
    sim = simulator(responder=answer_analysis_prompts)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    get_config.cache_clear()
    from aita.services.llm.openrouter import create_openrouter_client

    image = tmp_path / "scan.png"
    image.write_bytes(PNG_1PX)
    processed: list[Any] = []
    questions = [
        {"question_id": f"{n}", "question_text": f"Compute {n} + {n}.", "points": 5}
        for n in range(1, 6)
    ]
    tasks = [SimpleLLMTask(f"task_{i}", f"Summarise topic {i}") for i in range(6)]
    return {
        "client": create_openrouter_client(),
        "questions": questions,
        "tasks": tasks,
        "large_task_list": [SimpleLLMTask(f"large_{i}", f"item {i}") for i in range(30)],
        "process": processed.append,
        "processed": processed,
        "image_path": str(image),
        "sim": sim,
    }


#: What the guide's introduction says its examples are given: the reader's client and data.
GIVEN = {"client", "questions", "tasks", "large_task_list", "process", "image_path"}
#: Names a reader would have to import (beyond those some example imports).
STANDARD = {"json", "os", "time", "Path", "List", "Dict", "Any", "Optional"}


def imported_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def test_every_guide_example_imports_what_it_uses() -> None:
    """Run as written, an example needs no import from another: a name any example imports
    (or a standard one such as ``json`` or ``List``) is imported where it is used."""
    examples = [(key, ast.parse(code)) for key, code in guide_examples() if key not in NOT_PYTHON]
    importable = STANDARD | set().union(*(imported_names(tree) for _, tree in examples))
    missing = {}
    for key, tree in examples:
        used = {
            node.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
        }
        bound = imported_names(tree) | {
            node.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
        }
        bound |= {
            node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)
        }
        lacking = (used & importable) - bound - GIVEN
        if lacking:
            missing[key] = sorted(lacking)
    assert not missing


def test_the_guide_names_folders_that_exist() -> None:
    root = GUIDE.parents[1]
    for folder in re.findall(r"`([\w./-]+/)`", GUIDE.read_text()):
        if not folder.startswith(("aita.", "./checkpoints")):
            assert (root / folder).is_dir(), folder


def load_guide_benchmark() -> Any:
    path = GUIDE.parents[1] / "benchmarks" / "guide.py"
    spec = importlib.util.spec_from_file_location("guide_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guides_speedup_tables_are_what_its_benchmark_measured() -> None:
    """Every figure of the guide's tables is one ``benchmarks/guide.py`` wrote (its output is
    kept beside the guide), and the guide names the script."""
    report = json.loads((GUIDE.parent / "guide-benchmark.json").read_text())
    text = GUIDE.read_text()
    assert load_guide_benchmark().markdown(report) in text
    assert "`python benchmarks/guide.py`" in text
    section = text.split("## Performance Benchmarks", 1)[1].split("\n## ", 1)[0]
    figures = set(re.findall(r"\| ([\d.]+)s \| ([\d.]+)x \|", section))
    measured = {
        (f"{row['seconds']:.1f}", str(row["speedup"]))
        for table in report["tables"]
        for row in table["rows"]
    }
    assert figures == measured


@pytest.mark.slow
def test_the_guide_benchmark_runs_at_smoke_size(tmp_path: Path) -> None:
    out = tmp_path / "guide.json"
    script = GUIDE.parents[1] / "benchmarks" / "guide.py"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [t["calls"] for t in report["tables"]] == [20, 100]
    assert all(t["rows"][0]["speedup"] == 1.0 for t in report["tables"])
    assert load_guide_benchmark().markdown(report) in done.stdout


def test_the_guide_has_the_examples_we_expect() -> None:
    keys = {key.rsplit("#", 1)[0] for key, _ in guide_examples()}
    for section in [
        "Usage Examples/Programmatic Usage",
        "Usage Examples/Custom Tasks",
        "Performance Optimization/Checkpointing",
        "Error Handling/Graceful Degradation",
        "Error Handling/Retry Logic",
        "Monitoring & Metrics/Execution Metrics",
        "Advanced Topics/Creating Custom Tasks",
        "Advanced Topics/Vision Tasks",
    ]:
        assert section in keys


def test_every_guide_example_runs_as_written(
    guide_namespace: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ns = guide_namespace
    for key, code in guide_examples():
        if key in NOT_PYTHON:
            continue
        try:
            exec(compile(code, f"guide:{key}", "exec"), ns)
        except Exception as error:  # pragma: no cover - the message is the point
            pytest.fail(f"guide example {key} failed: {type(error).__name__}: {error}")
        check_example(key, ns, capsys.readouterr().out)


def check_example(key: str, ns: dict[str, Any], out: str) -> None:
    """What each example is supposed to have achieved, beyond not raising."""
    section = key.rsplit("#", 1)[0]
    if section == "Configuration/Programmatic Configuration":
        assert (ns["max_workers"], ns["rate_limit"]) == (5, 10.0)  # the documented defaults
        check_runs(ns["executor"], ns["sim"], max_workers=10)
    elif section == "Performance Optimization/Rate Limiting":
        started = time.monotonic()
        check_runs(ns["executor"], ns["sim"], max_workers=10, count=16)
        assert time.monotonic() - started >= 15 / 15.0  # 16 starts at 15/s span a second
    elif section in {
        "Performance Optimization/Checkpointing",
        "Checkpoint & Resume/Automatic Checkpointing",
    }:
        result = ns["result"]
        assert result.success_rate == 100.0 and result.checkpoint_path is not None
        saved = CheckpointManager("checkpoints").load(result.checkpoint_path)
        assert set(saved.succeeded) == {r.task_id for r in result.task_results}
    elif key == "Error Handling/Retry Logic#0":
        failing, executor = AlwaysUnavailable(), ns["executor"]
        executor.llm_client, real = failing, executor.llm_client
        try:
            [result] = executor.execute_batch([SimpleLLMTask("r", "retry me")]).task_results
        finally:
            executor.llm_client = real  # later examples use this executor
        assert not result.success and result.retry_count == 3 and failing.calls == 4
    elif section == "Advanced Topics/Batching Tasks":
        task_class = ns["BatchableAnalysisTask"]
        assert issubclass(task_class, BatchableLLMTask)
        assert {"can_batch_with", "combine_with", "split_batch_result"} <= set(vars(task_class))
    elif key == "Migration Guide/From Sequential to Parallel#1":
        assert [k.question_id for k in ns["answer_keys"]] == ["1", "2", "3", "4", "5"]
    elif section == "Usage Examples/Programmatic Usage":
        assert re.findall(r"Generated answer key for (\S+)", out) == ["1", "2", "3", "4", "5"]
    elif section == "Usage Examples/Custom Tasks":
        assert ns["result"].task_results[0].result["difficulty"] == "medium"
    elif section == "Checkpoint & Resume/Manual Resume":
        assert ns["result"].metrics.resumed_tasks == 30  # nothing redone
    elif section == "Error Handling/Graceful Degradation":
        assert "Success rate: 100.0%" in out
    elif key == "Error Handling/Retry Logic#1":
        check_my_task_retry_rules(ns["MyTask"])
    elif section == "Monitoring & Metrics/Execution Metrics":
        assert "Completed: 5" in out and "Throughput:" in out
    elif section == "Advanced Topics/Creating Custom Tasks":
        task = ns["DifficultyAnalysisTask"]("q1", "What is 2 + 2?")
        [result] = ns["executor"].execute_batch([task]).task_results
        assert result.result == {
            "question_id": "q1",
            "difficulty": "medium",
            "reasoning": "two-step problem",
        }
    elif section == "Advanced Topics/Vision Tasks":
        task = ns["ImageAnalysisTask"](ns["image_path"], "scan_1")
        [result] = ns["executor"].execute_batch([task]).task_results
        assert result.success and result.result["text"] == "x"
        assert ns["sim"].stats.images_received >= 1
    elif section == "Troubleshooting/Checkpoint Not Resuming":
        assert re.search(r"Latest checkpoint: \S*my_operation_\d{8}_\d{6}\.checkpoint\.json", out)
    elif section == "Migration Guide/Custom Pipeline Integration":

        class MyTask(SimpleLLMTask):
            def __init__(self, item: str) -> None:
                super().__init__(f"item_{item}", f"Summarise {item}")

        ns["MyTask"] = MyTask
        results = ns["MyPipeline"]().process_batch(["a", "b"])
        assert [r.result for r in results] == ["[sim] Summarise a", "[sim] Summarise b"]


def check_runs(executor: Any, sim: Any, *, max_workers: int, count: int = 12) -> None:
    """The example's executor runs a batch: every task its own answer, no more in flight
    than it allows."""
    before = sim.stats.max_in_flight
    sim.stats.max_in_flight = 0
    tasks = [SimpleLLMTask(f"check_{i}", f"check {i}") for i in range(count)]
    result = executor.execute_batch(tasks, checkpoint_name=f"check_{id(executor)}")
    assert [r.result for r in result.task_results] == [f"[sim] check {i}" for i in range(count)]
    assert sim.stats.max_in_flight <= max_workers
    sim.stats.max_in_flight = max(before, sim.stats.max_in_flight)


class AlwaysUnavailable:
    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: list[LLMMessage], **params: Any) -> Any:
        self.calls += 1
        raise ProviderUnavailable("down for maintenance", status_code=500, retry_after=0.0)


def check_my_task_retry_rules(my_task: type) -> None:
    class Concrete(my_task):  # type: ignore[misc, valid-type]
        task_id = "t"

        def build_messages(self) -> list[LLMMessage]:
            return [LLMMessage(role="user", content="x")]

    task = Concrete()
    assert task.should_retry(RateLimited("Too Many Requests", status_code=429), 4)
    assert not task.should_retry(ProviderUnavailable("down", status_code=503), 2)
