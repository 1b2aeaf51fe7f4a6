"""Loaded into the schemathesis CLI through SCHEMATHESIS_HOOKS.

1. Audit events reach the storing path. A drawn event_timestamp lies anywhere in 0001..9999, so
   almost every generated event would be 400 (older than 7 days), and a drawn parent_event_id
   names no stored event. A *valid* drawn value is swapped for another valid one (now; no
   parent), so a schema-invalid case stays invalid and a valid one becomes storable.

2. Works around a CPython 3.11 bug, not one of ours: `ast.parse` called deep in the stack can raise
`SystemError: AST constructor recursion depth mismatch` (fixed in later CPython releases).
Hypothesis calls it only to *describe* a filter lambda, and schemathesis reports the error as
a failed run. A description is not needed to generate data, so it falls back to a generic one.
"""

from __future__ import annotations

import datetime as dt
import functools

import jsonschema_rs
import schemathesis
from hypothesis.internal import lambda_sources

from datastorage.schemas import openapi_document

_TIMESTAMP = jsonschema_rs.validator_for(
    openapi_document()["components"]["schemas"]["Timestamp"], validate_formats=True
)
_UUID = jsonschema_rs.validator_for({"type": "string", "format": "uuid"}, validate_formats=True)


def _storable(event: object) -> None:
    if not isinstance(event, dict):
        return
    stamp = event.get("event_timestamp")
    if _TIMESTAMP.is_valid(stamp):
        event["event_timestamp"] = dt.datetime.now(dt.UTC).isoformat()
    if _UUID.is_valid(event.get("parent_event_id")):
        del event["parent_event_id"]


@schemathesis.hook
def map_body(ctx, body):
    operation = ctx.operation
    if operation is not None and operation.method.upper() == "POST":
        if operation.path == "/api/v1/audit/events":
            _storable(body)
        elif operation.path == "/api/v1/audit/events/batch" and isinstance(body, list):
            for event in body:
                _storable(event)
    return body


_describe = getattr(lambda_sources, "_lambda_description", None)


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


if _describe is not None:  # only where this hypothesis version has the function
    lambda_sources._lambda_description = functools.wraps(_describe)(_lambda_description)
