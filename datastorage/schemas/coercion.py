"""Values made to match their schema types: query text to numbers, integral floats to `int`.

Query and path parameters arrive as text; `coerce_text` turns them into what their schema
types say before validation, leaving a value it cannot convert for the validator to reject.
JSON Schema counts `5.0` as an integer, but the handlers and PostgreSQL must not see a float
there: `integer_paths` finds the integer fields of a body schema once, and
`integral_floats_to_int` fixes a valid body in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def coerce_text(raw: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
        if kind == "boolean" and raw.lower() in ("true", "false", "1", "0"):
            return raw.lower() in ("true", "1")
    except ValueError:
        return raw
    if kind == "array":
        return [part for part in raw.split(",") if part]
    return raw


EACH = object()  # a path step meaning "every item of the array"


def integer_paths(schema: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of the integer-typed fields of an (inlined) schema; `EACH` steps into arrays."""
    if not isinstance(schema, dict):
        return []
    kind = schema.get("type")
    paths = [prefix] if kind == "integer" or (isinstance(kind, list) and "integer" in kind) else []
    for part in schema.get("allOf", ()):
        paths += integer_paths(part, prefix)
    for name, part in schema.get("properties", {}).items():
        paths += integer_paths(part, (*prefix, name))
    paths += integer_paths(schema.get("items"), (*prefix, EACH))
    return paths


def integral_floats_to_int(node: Any, path: tuple[Any, ...]) -> None:
    """Replace a float at `path` (valid, so integral) by its int, in place."""
    if not path:
        return
    head, rest = path[0], path[1:]
    if head is EACH:
        if not isinstance(node, list):
            return
        keys: Any = range(len(node))
    elif isinstance(node, dict) and head in node:
        keys = (head,)
    else:
        return
    for key in keys:
        if rest:
            integral_floats_to_int(node[key], rest)
        elif isinstance(node[key], float):
            node[key] = int(node[key])
