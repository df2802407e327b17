"""A valid placeholder instance of a JSON schema: what the simulator answers to a schema request.

Covers the subset pydantic emits: objects, arrays, scalars, enums, consts, ``$ref``/``$defs``,
``anyOf``/``oneOf``/``allOf`` and numeric bounds.

The schema comes from whoever sends a request, so what it can make the simulator build is
bounded: at most ``MAX_ITEMS`` items in an array, ``MAX_STRING`` characters in a string,
``MAX_DEPTH`` levels of nesting (a recursive ``$ref`` stops there) and ``MAX_NODES`` values in
all. Past a bound the instance is cut short (and may then not satisfy the schema): one small
request never makes the simulator allocate without limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_ITEMS = 1_000
MAX_STRING = 10_000
MAX_DEPTH = 32
MAX_NODES = 10_000


@dataclass
class _Budget:
    nodes: int = MAX_NODES


def sample_instance(
    schema: dict[str, Any], root: dict[str, Any] | None = None, name: str = ""
) -> Any:
    """A placeholder instance of ``schema`` (``root`` holds its ``$defs``; ``name`` labels
    strings), within the bounds above."""
    return _sample(schema, root if root is not None else schema, name, 0, _Budget())


def _sample(
    schema: dict[str, Any], root: dict[str, Any], name: str, depth: int, budget: _Budget
) -> Any:
    budget.nodes -= 1
    if depth > MAX_DEPTH or budget.nodes < 0:
        return None
    if "$ref" in schema:
        return _sample(_resolve(schema["$ref"], root), root, name, depth + 1, budget)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return _sample(options[0], root, name, depth + 1, budget)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part)
        return _sample(merged, root, name, depth + 1, budget)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        return {key: _sample(sub, root, key, depth + 1, budget) for key, sub in properties.items()}
    if kind == "array":
        count = min(max(1, int(schema.get("minItems", 1))), int(schema.get("maxItems", MAX_ITEMS)))
        items = []
        for _ in range(min(count, MAX_ITEMS)):
            if budget.nodes <= 0:
                break
            items.append(_sample(schema.get("items", {}), root, name, depth + 1, budget))
        return items
    if kind in ("number", "integer"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 1))
        value = (low + high) / 2 if high >= low else low
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = f"placeholder {name}".strip()
    min_length = min(int(schema.get("minLength", 0)), MAX_STRING)
    budget.nodes -= min_length // 100  # a long string weighs on the total like many values
    return text + "x" * max(0, min_length - len(text))


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return dict(node)
