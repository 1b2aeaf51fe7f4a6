"""The OpenAPI document and the request validators compiled from it, once.

`openapi.yaml` is the only place a request schema is written. `SchemaValidator` compiles the
request body schema and the query and path parameters of every operation into jsonschema validators
(plus a native fast check for bodies) and reports every failing field as `{path: message}`.
The HTTP layer turns those reports into problems (`http.validation`); the catalog uses the same
validator for what the operator sends it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import uuid
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema
import orjson
import referencing
import referencing.jsonschema
import yaml

from datastorage.config import Settings
from datastorage.metrics import VALIDATION_FAILURES

SPEC_URI = "urn:datastorage:openapi"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@functools.cache
def openapi_text() -> str:
    return (resources.files("datastorage") / "openapi.yaml").read_text()


@functools.cache
def openapi_document() -> dict[str, Any]:
    return yaml.safe_load(openapi_text())


@functools.cache
def openapi_json() -> bytes:
    return orjson.dumps(openapi_document())


_formats = jsonschema.FormatChecker(formats=())


@_formats.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return True


@_formats.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if isinstance(value, str):
        dt.date.fromisoformat(value)
    return True


@_formats.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    if isinstance(value, str):
        uuid.UUID(value)
        return len(value) == 36
    return True


def field_path(path: Any) -> str:
    """`labels.severity`, `[3].correlation_id` — the path format of field_errors."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(error: jsonschema.ValidationError) -> str:
    keyword, value = error.validator, error.validator_value
    if keyword == "required":
        return "is required"
    if keyword == "maxLength":
        return f"must be at most {value} characters"
    if keyword == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters"
    if keyword == "enum":
        return "must be one of " + ", ".join(map(str, value))
    if keyword == "type":
        return f"must be of type {value if isinstance(value, str) else ' or '.join(value)}"
    if keyword == "format":
        return {
            "date-time": "must be an RFC 3339 timestamp with a zone",
            "uuid": "must be a UUID",
            "date": "must be a date YYYY-MM-DD",
        }.get(value, f"must be a valid {value}")
    if keyword == "maximum":
        return f"must be at most {value}"
    if keyword == "minimum":
        return f"must be at least {value}"
    if keyword == "maxItems":
        return f"must have at most {value} items"
    if keyword == "minItems":
        return f"must have at least {value} item{'s' if value != 1 else ''}"
    if keyword == "pattern":
        # `x-error` (an OpenAPI extension) words a pattern for people.
        return error.schema.get("x-error") or f"must match {value}"
    if keyword in ("maxProperties", "minProperties"):
        return error.message
    return error.message


def collect_field_errors(errors: Any, root: tuple[Any, ...] = ()) -> dict[str, str]:
    """Flatten jsonschema errors to {path: message}; the first message per path wins. `root`:
    where the validated value sits in the request (`(3,)` for item 3 of a batch)."""
    out: dict[str, str] = {}
    for error in sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.validator)):
        path = [*root, *error.absolute_path]
        if error.validator == "required":
            missing = re.match(r"'(.+?)' is a required property", error.message)
            if missing:
                path.append(missing.group(1))
        key = field_path(path) or "body"
        if key not in out:
            out[key] = _message(error)
            count_failure(key, str(error.validator))
    return out


# Objects whose keys the client chooses: a metric label stops at them (bounded cardinality).
_FREE_FORM = {"event_data", "custom_labels", "parameters", "body"}


def metric_field(path: str) -> str:
    """`[3].event_data.a.b` -> `[].event_data`: a label that cannot grow without bound."""
    kept = []
    for part in re.sub(r"\[\d+\]", "[]", path).split("."):
        kept.append(part)
        if part.removeprefix("[]") in _FREE_FORM:
            break
    return ".".join(kept)[:100]


def count_failure(field: str, reason: str) -> None:
    VALIDATION_FAILURES.labels(metric_field(field), reason).inc()


def _coerce(raw: str, schema: Mapping[str, Any]) -> Any:
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


class SchemaValidator:
    """Validators for every operation of the OpenAPI document, compiled once."""

    def __init__(self, settings: Settings) -> None:
        document = self._apply_limits(openapi_document(), settings)
        resource = referencing.jsonschema.DRAFT202012.create_resource(document)
        registry = referencing.Registry().with_resource(SPEC_URI, resource)
        self._bodies: dict[str, jsonschema.Draft202012Validator] = {}
        self._fast: dict[str, Any] = {}
        self._integers: dict[str, list[tuple[Any, ...]]] = {}
        self._parameters: dict[str, tuple[jsonschema.Draft202012Validator, dict[str, Any]]] = {}
        for path_item in document["paths"].values():
            for operation in path_item.values():
                op_id = operation["operationId"]
                body = operation.get("requestBody", {}).get("content", {}).get("application/json")
                if body:
                    self._bodies[op_id] = self._validator(body["schema"], registry)
                    self._fast[op_id] = _fast_validator(body["schema"], document)
                    self._integers[op_id] = _integer_paths(_inline_refs(body["schema"], document))
                params = {
                    p["name"]: p
                    for p in operation.get("parameters", [])
                    if p["in"] in ("query", "path")
                }
                if params:
                    schema = {
                        "type": "object",
                        "properties": {n: p["schema"] for n, p in params.items()},
                    }
                    self._parameters[op_id] = (self._validator(schema, registry), schema)

    @staticmethod
    def _apply_limits(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
        """The configured batch size overrides the document's default maximum."""
        document = json.loads(json.dumps(document))
        batch = document["components"]["schemas"]["AuditEventBatchRequest"]
        batch["maxItems"] = settings.max_batch_items
        return document

    @staticmethod
    def _validator(schema: Mapping[str, Any], registry: referencing.Registry):
        wrapped = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "urn:datastorage:request",
            **_rebase_refs(schema),
        }
        return jsonschema.Draft202012Validator(wrapped, registry=registry, format_checker=_formats)

    def body_errors(
        self, operation_id: str, data: Any, root: tuple[Any, ...] = ()
    ) -> dict[str, str]:
        """Every failing field. The compiled fast check answers the common case (valid) in
        a few microseconds; only an invalid body pays for the full error report.

        A valid body's integer fields become `int`: JSON Schema counts `5.0` as an integer,
        and the handlers and PostgreSQL must not see a float there."""
        fast = self._fast.get(operation_id)
        if fast is None or not fast.is_valid(data):
            errors = collect_field_errors(self._bodies[operation_id].iter_errors(data), root)
            if errors:
                return errors
        for path in self._integers.get(operation_id, ()):
            _integral_floats_to_int(data, path)
        return {}

    def parameter_values(
        self, operation_id: str, params: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Known parameters coerced to their schema types, defaults applied, unknown ignored;
        and the failing ones."""
        validator, schema = self._parameters[operation_id]
        values = {}
        unstorable = {}
        for name, prop in schema["properties"].items():
            if name in params:
                if "\x00" in params[name]:
                    count_failure(name, "unstorable")
                    unstorable[name] = "must not contain NUL characters"
                values[name] = _coerce(params[name], _resolve_local(prop))
            elif "default" in prop:
                values[name] = prop["default"]
        return values, {**collect_field_errors(validator.iter_errors(values)), **unstorable}


_EACH = object()  # a path step meaning "every item of the array"


def _integer_paths(schema: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of the integer-typed fields of an (inlined) schema; `_EACH` steps into arrays."""
    if not isinstance(schema, dict):
        return []
    kind = schema.get("type")
    paths = [prefix] if kind == "integer" or (isinstance(kind, list) and "integer" in kind) else []
    for part in schema.get("allOf", ()):
        paths += _integer_paths(part, prefix)
    for name, part in schema.get("properties", {}).items():
        paths += _integer_paths(part, (*prefix, name))
    paths += _integer_paths(schema.get("items"), (*prefix, _EACH))
    return paths


def _integral_floats_to_int(node: Any, path: tuple[Any, ...]) -> None:
    """Replace a float at `path` (valid, so integral) by its int, in place."""
    if not path:
        return
    head, rest = path[0], path[1:]
    if head is _EACH:
        if not isinstance(node, list):
            return
        keys: Any = range(len(node))
    elif isinstance(node, dict) and head in node:
        keys = (head,)
    else:
        return
    for key in keys:
        if rest:
            _integral_floats_to_int(node[key], rest)
        elif isinstance(node[key], float):
            node[key] = int(node[key])


def _inline_refs(schema: Any, document: Mapping[str, Any]) -> Any:
    """The schema with every local `$ref` replaced by its target (the request schemas are not
    recursive), for the compiled validator, which does not see the OpenAPI document."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = document
            for part in ref[2:].split("/"):
                target = target[part]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return _inline_refs({**target, **rest}, document)
        return {k: _inline_refs(v, document) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline_refs(v, document) for v in schema]
    return schema


def _fast_validator(schema: Mapping[str, Any], document: Mapping[str, Any]) -> Any:
    """A yes/no validator compiled to native code (jsonschema-rs) from the same schema; it only
    decides whether the full Python validator must run. The two agree on every format value
    tried except a leap second (`23:59:60`), which the fast check accepts; the handlers parse
    every timestamp they use and report such a value as a field error themselves."""
    try:
        import jsonschema_rs
    except ImportError:
        return None
    return jsonschema_rs.validator_for(_inline_refs(schema, document), validate_formats=True)


def _rebase_refs(schema: Any) -> Any:
    """Point local `#/components/...` refs at the registered OpenAPI document."""
    if isinstance(schema, dict):
        return {
            k: (
                SPEC_URI + v
                if k == "$ref" and isinstance(v, str) and v.startswith("#")
                else _rebase_refs(v)
            )
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase_refs(v) for v in schema]
    return schema


def _resolve_local(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not ref:
        return schema
    node: Any = openapi_document()
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node
