"""Audit-event endpoints (docs/api.md): parse the request, call `AuditService`, respond.

Errors of the service become problems in `http.errors`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from datastorage.domain.timeparse import parse_time_bound
from datastorage.http.authentication import charge_items, recorded_by
from datastorage.http.body import decode_json, nesting_errors, read_json
from datastorage.http.context import AppContext, accepted_response, context, json_response
from datastorage.http.problems import Problem, validation_error
from datastorage.http.validation import strict_query
from datastorage.schemas import count_failure
from datastorage.services.audit import Outcome, invalid_batch


async def create_event(request: Request) -> Response:
    ctx = context(request)
    body = await read_json(request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth)
    ctx.validator.body("createAuditEvent", body)
    outcome = await ctx.runtime.audit.record(body, recorded_by(request.scope))
    stored = outcome.records[0]
    payload = {"event_id": stored["event_id"], "event_timestamp": stored["event_timestamp"]}
    if outcome.status == "queued":
        return accepted_response(payload, "event")
    payload["message"] = "event stored"
    return json_response(payload, 201 if outcome.status == "created" else 200)


async def create_batch(request: Request) -> Response:
    ctx = context(request)
    # Nesting is checked item by item (in the stream, for the common batch).
    depth = ctx.settings.max_json_depth
    body = await read_json(request, ctx.settings.max_batch_body_bytes, depth + 1, check_depth=False)
    if not isinstance(body, list):
        ctx.validator.body("createAuditEventBatch", body)
    # The caller's write budget, before anything is stored or queued: a batch costs its items.
    charge_items(request.scope, len(body))

    def item_errors(index: int, item: Any) -> dict[str, str]:
        errors = nesting_errors(item, depth, (index,))
        return errors or ctx.validator.body_errors("createAuditEvent", item, (index,))

    def batch_errors(items: list[Any]) -> dict[str, str]:
        errors = nesting_errors(items, depth + 1)
        if errors:
            raise invalid_batch(errors)
        return ctx.validator.body_errors("createAuditEventBatch", items)

    outcome = await ctx.runtime.audit.record_batch(
        body,
        item_errors=item_errors,
        batch_errors=batch_errors,
        recorded_by=recorded_by(request.scope),
    )
    return _batch_response(outcome)


def _batch_response(outcome: Outcome) -> Response:
    ids = [e["event_id"] for e in outcome.records]
    if outcome.status == "queued":
        return accepted_response({"event_ids": ids}, f"{len(ids)} events")
    status = 201 if outcome.status == "created" else 200
    return json_response({"event_ids": ids, "message": f"{len(ids)} events stored"}, status)


def _time_bounds(params: dict[str, Any], errors: dict[str, str]) -> dict[str, dt.datetime | None]:
    now = dt.datetime.now(dt.UTC)
    bounds: dict[str, dt.datetime | None] = {"since": None, "until": None}
    for name in bounds:
        if params.get(name):
            try:
                bounds[name] = parse_time_bound(params[name], now)
            except ValueError as exc:
                errors[name] = str(exc)
    return bounds


def _event_data(ctx: AppContext, params: dict[str, Any], errors: dict[str, str]) -> Any:
    if params.get("event_data") is None:
        return None
    # The same strict decoder as request bodies: what it rejects could not match anyway
    # (or could not even be sent to PostgreSQL, like a NUL).
    reason = ""
    data = None
    try:
        data = decode_json(params["event_data"].encode(), ctx.settings.max_json_depth)
    except Problem as exc:
        reason = "; ".join((exc.field_errors or {"": exc.detail}).values())
    if not isinstance(data, dict):
        errors["event_data"] = "must be a JSON object" + (f" ({reason})" if reason else "")
    return data


def event_filters(
    ctx: AppContext, request: Request, extra_errors: Callable[[dict[str, Any]], dict[str, str]]
) -> tuple[dict[str, Any], Any, dict[str, dt.datetime | None]]:
    """The filters (docs/api.md) of a list or export request: (parameters, event_data, time
    bounds), or the 400 naming every failing parameter (`extra_errors` adds the caller's own
    checks)."""
    params, errors = ctx.validator.parameter_values("queryAuditEvents", strict_query(request))
    if errors:  # the schema's errors and the caller's, in one problem
        raise validation_error({**errors, **extra_errors(params)})
    errors = extra_errors(params)
    bounds = _time_bounds(params, errors)
    data = _event_data(ctx, params, errors)
    if errors:
        for field in errors:
            count_failure(field, "format")
        raise validation_error(errors)
    return params, data, bounds


def _paging_errors(params: dict[str, Any]) -> dict[str, str]:
    if params.get("offset") is not None and params.get("cursor"):
        return {"cursor": "use either offset or cursor, not both"}
    return {}


async def query_events(request: Request) -> Response:
    ctx = context(request)
    params, data, bounds = event_filters(ctx, request, _paging_errors)
    query, page = await ctx.runtime.audit.query(params, event_data=data, **bounds)
    return json_response(
        {
            "data": page.events,
            "pagination": {
                "limit": query.limit,
                "offset": None if query.cursor else (query.offset or 0),
                "total": page.total,
                "total_capped": page.total_capped,
                "has_more": page.has_more,
                "next_cursor": page.next_cursor,
            },
        }
    )


def parse_uuid_path(request: Request, name: str) -> str:
    raw = request.path_params[name]
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        count_failure(name, "format")
        raise validation_error({name: "must be a UUID"}) from exc


async def get_event(request: Request) -> Response:
    ctx = context(request)
    event_id = parse_uuid_path(request, "event_id")
    return json_response(await ctx.runtime.audit.get(event_id))


async def event_types(request: Request) -> Response:
    return json_response({"event_types": context(request).runtime.audit.event_types()})
