"""A valid placeholder instance of a JSON schema: what the simulator answers to a schema request.

Covers the subset pydantic emits: objects, arrays, scalars, enums, consts, ``$ref``/``$defs``,
``anyOf``/``oneOf``/``allOf`` and numeric bounds.
"""

from __future__ import annotations

from typing import Any


def sample_instance(
    schema: dict[str, Any], root: dict[str, Any] | None = None, name: str = ""
) -> Any:
    root = root if root is not None else schema
    if "$ref" in schema:
        return sample_instance(_resolve(schema["$ref"], root), root, name)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return sample_instance(options[0], root, name)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part)
        return sample_instance(merged, root, name)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        return {key: sample_instance(sub, root, key) for key, sub in properties.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [sample_instance(schema.get("items", {}), root, name) for _ in range(count)]
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
    min_length = int(schema.get("minLength", 0))
    return text + "x" * max(0, min_length - len(text))


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return dict(node)
