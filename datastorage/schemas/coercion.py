"""Values made to match their schema types: query text to numbers, integral floats to `int`,
explicit nulls that mean "absent" dropped.

Query and path parameters arrive as text; `coerce_text` turns them into what their schema
types say before validation, leaving a value it cannot convert for the validator to reject.
JSON Schema counts `5.0` as an integer, but the handlers and PostgreSQL must not see a float
there: `integer_paths` finds the integer fields of a body schema once, and
`integral_floats_to_int` fixes a valid body in place. Fields marked `x-null-means-absent` in
the document (optional fields older clients send as `null`, docs/compatibility.md) are found by
`null_as_absent_fields` and removed by `drop_nulls`, so everything after validation sees such a
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


def null_as_absent_fields(schema: Any) -> list[tuple[Path, tuple[str, ...]]]:
    """Where an explicit `null` means "absent": (path of an object, its marked field names)."""
    grouped: dict[Path, list[str]] = {}
    for path in _schema_paths(schema, lambda s: s.get(NULL_MEANS_ABSENT) is True):
        grouped.setdefault(path[:-1], []).append(path[-1])
    return [(parent, tuple(names)) for parent, names in grouped.items()]


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


def _drop_nulls(obj: Any, names: tuple[str, ...]) -> None:
    if type(obj) is dict:
        for name in names:
            if obj.get(name, 0) is None:
                del obj[name]


def integral_floats_to_int(node: Any, path: Path) -> None:
    """Replace a float at `path` (valid, so integral) by its int, in place."""
    _visit(node, path, _to_int)


def drop_nulls(node: Any, parent: Path, names: tuple[str, ...]) -> None:
    """Remove the `names` whose value is `null` from the object(s) at `parent`, in place."""
    if not parent:
        _drop_nulls(node, names)
    elif parent == (EACH,):  # the items of a batch: the hot case, without the generic walk
        if type(node) is list:
            for item in node:
                _drop_nulls(item, names)
    else:
        _visit(node, parent, lambda container, key: _drop_nulls(container[key], names))
