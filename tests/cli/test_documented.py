"""Every public name of the engine and every ready-made task says what it is for."""

from __future__ import annotations

import inspect
from typing import Any

import aita.engine
import aita.pipelines.tasks


def undocumented(module: Any) -> list[str]:
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_") or not (
                inspect.isfunction(value) or isinstance(value, property)
            ):
                continue
            if not inspect.getdoc(getattr(obj, attr)):  # a docstring of an overridden one counts
                missing.append(f"{name}.{attr}")
    return missing


def test_every_public_engine_name_and_method_has_a_docstring() -> None:
    assert undocumented(aita.engine) == []


def test_every_ready_made_task_has_docstrings() -> None:
    assert undocumented(aita.pipelines.tasks) == []


def test_the_package_ships_its_type_information() -> None:
    from pathlib import Path

    assert (Path(aita.engine.__file__).parent.parent / "py.typed").exists()
