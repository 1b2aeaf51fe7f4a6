"""Values made to match their schema types: query text to numbers, integral floats to `int`,
explicit nulls that mean "absent" dropped.

Query and path parameters arrive as text; `coerce_text` turns them into what their schema
types say before validation, leaving a value it cannot convert for the validator to reject.
JSON Schema counts `5.0` as an integer, but the handlers and PostgreSQL must not see a float
there: `integer_paths` finds the integer fields of a body schema once, and
`integral_floats_to_int` fixes a valid body in place. Fields marked `x-null-means-absent` in
the document (optional fields older clients send as `null`, SPEC §15) are found by
`null_as_absent_paths` and removed by `drop_null`, so everything after validation sees such a
body exactly as if the field had been left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


NULL_MEANS_ABSENT = "x-null-means-absent"

Path = tuple[Any, ...]


def _schema_paths(schema: Any, wanted: Callable[[dict], bool], prefix: Path = ()) -> list[Path]:
    """Paths of the fields of an (inlined) schema that `wanted` picks; `EACH` steps into
    arrays."""
    if not isinstance(schema, dict):
        return []
    paths = [prefix] if wanted(schema) else []
    for part in schema.get("allOf", ()):
        paths += _schema_paths(part, wanted, prefix)
    for name, part in schema.get("properties", {}).items():
        paths += _schema_paths(part, wanted, (*prefix, name))
    paths += _schema_paths(schema.get("items"), wanted, (*prefix, EACH))
    return paths


def _is_integer(schema: dict) -> bool:
    kind = schema.get("type")
    return kind == "integer" or (isinstance(kind, list) and "integer" in kind)


def integer_paths(schema: Any) -> list[Path]:
    """Paths of the integer-typed fields of an (inlined) schema."""
    return _schema_paths(schema, _is_integer)


def null_as_absent_paths(schema: Any) -> list[Path]:
    """Paths of the fields whose explicit `null` means "absent"."""
    return _schema_paths(schema, lambda s: s.get(NULL_MEANS_ABSENT) is True)


def _visit(node: Any, path: Path, fix: Callable[[Any, Any], None]) -> None:
    """Call `fix(container, key)` for every value at `path` in a (valid) body."""
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
            _visit(node[key], rest, fix)
        else:
            fix(node, key)


def _to_int(container: Any, key: Any) -> None:
    if isinstance(container[key], float):
        container[key] = int(container[key])


def _drop_if_null(container: Any, key: Any) -> None:
    if container[key] is None:
        del container[key]


def integral_floats_to_int(node: Any, path: Path) -> None:
    """Replace a float at `path` (valid, so integral) by its int, in place."""
    _visit(node, path, _to_int)


def drop_null(node: Any, path: Path) -> None:
    """Remove the key at `path` where its value is `null`, in place."""
    _visit(node, path, _drop_if_null)
