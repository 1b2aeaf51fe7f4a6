"""`SchemaValidator`: every operation's request body and parameters checked against the document.

The request body schema and the query and path parameters of every operation are compiled once
into jsonschema validators (plus the native fast check for bodies); a check reports every
failing field as `{path: message}`. The HTTP layer turns those reports into problems
(`http.validation`); the catalog uses the same validator for what the operator sends it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema

from datastorage.config import Settings
from datastorage.schemas.coercion import (
    coerce_text,
    drop_nulls,
    integer_paths,
    integral_floats_to_int,
    null_as_absent_fields,
)
from datastorage.schemas.document import (
    SPEC_URI,
    inline_refs,
    openapi_document,
    rebase_refs,
    resolve_local,
)
from datastorage.schemas.failures import count_failure
from datastorage.schemas.fast import fast_validator
from datastorage.schemas.formats import FORMATS
from datastorage.schemas.messages import collect_field_errors


class SchemaValidator:
    """Validators for every operation of the OpenAPI document, compiled once."""

    def __init__(self, settings: Settings) -> None:
        document = self._apply_limits(openapi_document(), settings)
        resource = referencing.jsonschema.DRAFT202012.create_resource(document)
        registry = referencing.Registry().with_resource(SPEC_URI, resource)
        self._bodies: dict[str, jsonschema.Draft202012Validator] = {}
        self._fast: dict[str, Any] = {}
        self._integers: dict[str, list[tuple[Any, ...]]] = {}
        self._nulls: dict[str, list[tuple[tuple[Any, ...], tuple[str, ...]]]] = {}
        self._parameters: dict[str, tuple[jsonschema.Draft202012Validator, dict[str, Any]]] = {}
        for path_item in document["paths"].values():
            for operation in path_item.values():
                op_id = operation["operationId"]
                body = operation.get("requestBody", {}).get("content", {}).get("application/json")
                if body:
                    self._bodies[op_id] = self._validator(body["schema"], registry)
                    self._fast[op_id] = fast_validator(body["schema"], document)
                    inlined = inline_refs(body["schema"], document)
                    self._integers[op_id] = integer_paths(inlined)
                    self._nulls[op_id] = null_as_absent_fields(inlined)
                params = {
                    p["name"]: p
                    for p in operation.get("parameters", [])
                    if p["in"] in ("query", "path")
                }
                if params:
                    schema = {
                        "type": "object",
                        "properties": {n: p["schema"] for n, p in params.items()},
                        "required": [n for n, p in params.items() if p.get("required")],
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
            **rebase_refs(schema),
        }
        return jsonschema.Draft202012Validator(wrapped, registry=registry, format_checker=FORMATS)

    def body_errors(
        self, operation_id: str, data: Any, root: tuple[Any, ...] = ()
    ) -> dict[str, str]:
        """Every failing field. The compiled fast check answers the common case (valid) in
        a few microseconds; only an invalid body pays for the full error report.

        A valid body is normalized in place, the one place for it: a `null` in a field marked
        `x-null-means-absent` is removed (docs/compatibility.md), and integer fields become `int`
        (JSON Schema counts `5.0` as an integer; the handlers and PostgreSQL must not see a
        float)."""
        fast = self._fast.get(operation_id)
        if fast is None or not fast.is_valid(data):
            errors = collect_field_errors(self._bodies[operation_id].iter_errors(data), root)
            if errors:
                return errors
        for parent, names in self._nulls.get(operation_id, ()):
            drop_nulls(data, parent, names)
        for path in self._integers.get(operation_id, ()):
            integral_floats_to_int(data, path)
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
                values[name] = coerce_text(params[name], resolve_local(prop))
            elif "default" in prop:
                values[name] = prop["default"]
        return values, {**collect_field_errors(validator.iter_errors(values)), **unstorable}
