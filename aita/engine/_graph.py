"""The task graph: dependencies checked whole before any call, then used to release tasks.

Only tasks that declare ``dependencies`` cost anything here, so a flat batch of 100,000 tasks
carries no graph at all beyond the id index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aita.engine._tasks import LLMTask
from aita.errors import TaskGraphError


@dataclass(frozen=True)
class TaskGraph:
    index_of: dict[str, int]
    #: task index -> indices of the tasks it needs (only tasks with dependencies appear)
    requires: dict[int, tuple[int, ...]]
    #: task index -> indices of the tasks that need it
    dependents: dict[int, list[int]]

    @classmethod
    def build(cls, tasks: Sequence[LLMTask]) -> TaskGraph:
        """Raises ``TaskGraphError`` for duplicate ids, unknown dependencies and cycles."""
        index_of: dict[str, int] = {}
        duplicates: list[str] = []
        for i, task in enumerate(tasks):
            task_id = task.task_id
            if task_id in index_of:
                duplicates.append(task_id)
            index_of[task_id] = i
        if duplicates:
            raise TaskGraphError(f"duplicate task ids: {_some(sorted(set(duplicates)))}")
        requires: dict[int, tuple[int, ...]] = {}
        dependents: dict[int, list[int]] = {}
        for i, task in enumerate(tasks):
            if not task.dependencies:
                continue
            needed = []
            for dep in task.dependencies:
                if dep not in index_of:
                    raise TaskGraphError(f"task {task.task_id!r} depends on unknown task {dep!r}")
                needed.append(index_of[dep])
                dependents.setdefault(index_of[dep], []).append(i)
            requires[i] = tuple(needed)
        graph = cls(index_of, requires, dependents)
        cycle = graph._find_cycle(tasks)
        if cycle:
            raise TaskGraphError(f"dependency cycle: {' -> '.join(cycle)}")
        return graph

    def descendants(self, index: int) -> list[int]:
        """Every task that needs ``index``, directly or through others."""
        seen: set[int] = set()
        order: list[int] = []
        stack = list(self.dependents.get(index, ()))
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                order.append(node)
                stack.extend(self.dependents.get(node, ()))
        return order

    def _find_cycle(self, tasks: Sequence[LLMTask]) -> list[str]:
        white, grey, black = 0, 1, 2
        colour: dict[int, int] = {}
        for start in self.requires:
            if colour.get(start, white) != white:
                continue
            path: list[int] = []
            stack: list[tuple[int, int]] = [(start, 0)]
            while stack:
                node, next_child = stack.pop()
                if next_child == 0:
                    colour[node] = grey
                    path.append(node)
                children = self.requires.get(node, ())
                if next_child < len(children):
                    stack.append((node, next_child + 1))
                    child = children[next_child]
                    state = colour.get(child, white)
                    if state == grey:
                        loop = [*path[path.index(child) :], child]
                        return [tasks[i].task_id for i in loop]
                    if state == white:
                        stack.append((child, 0))
                else:
                    colour[node] = black
                    path.pop()
        return []


def _some(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")
