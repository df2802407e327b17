"""The engine's public surface: one package, private modules behind it, the guide's paths kept."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import aita
import aita.engine

ROOT = Path(__file__).resolve().parents[2]

#: Import paths the users' guide (and users' code) has, and names they must still give.
GUIDE_PATHS = {
    "aita.utils.parallel_executor": ["ParallelLLMExecutor", "create_executor", "TaskResult"],
    "aita.utils.llm_tasks": ["LLMTask", "SimpleLLMTask", "VisionLLMTask", "BatchableLLMTask"],
    "aita.utils.llm_task_implementations": ["create_answer_key_tasks", "RubricTask"],
    "aita.utils.checkpoint": ["CheckpointManager"],
    "aita.utils.rate_limiter": ["RateLimiter", "NoOpRateLimiter"],
    "aita.services.llm.base": ["LLMMessage", "LLMResponse", "LLMClient", "RateLimited"],
    "aita.services.llm.openrouter": ["create_openrouter_client"],
    "aita.config": ["get_config", "ParallelExecutionConfig"],
}


@pytest.mark.parametrize(("module", "names"), GUIDE_PATHS.items())
def test_guide_import_paths_still_give_the_same_objects(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        value = getattr(imported, name)
        if name in aita.engine.__all__:
            assert value is getattr(aita.engine, name)


def test_every_public_engine_name_is_importable_from_the_engine_and_from_aita() -> None:
    for name in aita.engine.__all__:
        assert getattr(aita.engine, name) is getattr(aita, name)
    assert {"ParallelLLMExecutor", "RetryPolicy", "CheckpointManager", "RateLimiter"} <= set(
        aita.engine.__all__
    )


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")]


def test_nothing_outside_the_engine_imports_a_private_engine_module() -> None:
    engine = ROOT / "aita" / "engine"
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in python_files("aita", "tests", "benchmarks")
        if not path.is_relative_to(engine)
        for module in imports_of(path)
        if module.startswith("aita.engine._")
    ]
    assert offenders == []


def test_aita_code_does_not_import_through_the_guides_re_exports() -> None:
    reexports = set(GUIDE_PATHS) - {"aita.config"}
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in python_files("aita")
        if not any(part in {"utils", "services"} for part in path.relative_to(ROOT).parts)
        for module in imports_of(path)
        if module in reexports
    ]
    assert offenders == []


def test_the_engine_knows_nothing_about_exams() -> None:
    engine_imports = [m for p in python_files("aita/engine") for m in imports_of(p)]
    assert not [
        m for m in engine_imports if m.startswith(("aita.pipelines", "aita.pipelines.exam"))
    ]
