"""Audit-event endpoints (SPEC §3.2): parse -> domain/store -> respond."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from datastorage.audit import WriteUnavailable
from datastorage.domain.events import EVENT_TYPES, EventRuleError
from datastorage.domain.timeparse import parse_time_bound
from datastorage.http.context import AppContext, json_response
from datastorage.http.middleware import read_json
from datastorage.http.problems import (
    Problem,
    conflict,
    not_found,
    unavailable,
    validation_error,
)
from datastorage.http.validation import decode_json, nesting_errors
from datastorage.schemas import count_failure
from datastorage.store import audit_events
from datastorage.store.errors import Conflict, StoreUnavailable


def _event_data_errors(ctx: AppContext, body: dict[str, Any], prefix: str) -> dict[str, str]:
    size = len(orjson.dumps(body["event_data"]))
    if size > ctx.settings.max_event_data_bytes:
        count_failure(prefix + "event_data", "size")
        return {
            prefix + "event_data": f"must serialize to at most "
            f"{ctx.settings.max_event_data_bytes} bytes (got {size})"
        }
    return {}


def _normalize(ctx: AppContext, body: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    errors = _event_data_errors(ctx, body, prefix)
    try:
        event = ctx.writer.normalize(body, prefix)
    except EventRuleError as exc:
        for field in exc.field_errors:
            count_failure(field, "rule")
        errors.update(exc.field_errors)
        event = {}
    if errors:
        raise validation_error(errors)
    return event


def _write_unavailable(ctx: AppContext, exc: Exception) -> Problem:
    return unavailable(
        f"the write cannot be stored or queued right now: {exc}", ctx.settings.retry_after
    )


async def create_event(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    body = await read_json(request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth)
    ctx.validator.body("createAuditEvent", body)
    event = _normalize(ctx, body)
    try:
        outcome = await ctx.writer.write_event(event, client_id=bool(body.get("event_id")))
    except audit_events.UnknownParent as exc:
        count_failure("parent_event_id", "unknown")
        raise validation_error({"parent_event_id": "must name a stored event"}) from exc
    except Conflict as exc:
        raise conflict(str(exc), event_id=event["event_id"]) from exc
    except WriteUnavailable as exc:
        raise _write_unavailable(ctx, exc) from exc
    stored = outcome.records[0]
    payload = {"event_id": stored["event_id"], "event_timestamp": stored["event_timestamp"]}
    if outcome.status == "queued":
        payload |= {
            "status": "accepted",
            "message": "database unavailable; event queued durably and will be stored",
        }
        return json_response(payload, 202)
    payload["message"] = "event stored"
    return json_response(payload, 201 if outcome.status == "created" else 200)


async def create_batch(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    # Nesting is checked item by item (in the stream, for the common batch).
    depth = ctx.settings.max_json_depth
    body = await read_json(request, ctx.settings.max_batch_body_bytes, depth + 1, check_depth=False)
    if not isinstance(body, list):
        ctx.validator.body("createAuditEventBatch", body)
    if len(body) > ctx.settings.max_batch_items:
        count_failure("body", "maxItems")
        raise validation_error({"body": f"must have at most {ctx.settings.max_batch_items} items"})
    if body and all(
        isinstance(item, dict) and "event_id" not in item and "parent_event_id" not in item
        for item in body
    ):
        return await _stream_batch(ctx, body)
    errors = nesting_errors(body, depth + 1)
    if errors:
        raise _invalid_batch(errors)
    errors = ctx.validator.body_errors("createAuditEventBatch", body)
    events: list[dict[str, Any]] = []
    client_ids: set[str] = set()
    seen: dict[str, int] = {}
    for index, item in enumerate(body):
        prefix = f"[{index}]."
        if errors and any(key.startswith(prefix) or key == f"[{index}]" for key in errors):
            continue
        try:
            event = _normalize(ctx, item, prefix)
        except Problem as problem:
            errors.update(problem.field_errors or {})
            continue
        if event["event_id"] in seen:
            errors[prefix + "event_id"] = (
                f"duplicates the event_id of item [{seen[event['event_id']]}]"
            )
            count_failure("[].event_id", "duplicate")
        seen[event["event_id"]] = index
        if item.get("event_id"):
            client_ids.add(event["event_id"])
        events.append(event)
    if errors:
        raise _invalid_batch(errors)
    try:
        outcome, conflicts = await ctx.writer.write_batch(events, client_ids)
    except audit_events.UnknownParent as exc:
        raise validation_error(
            {
                f"[{i}].parent_event_id": "must name a stored event or an earlier item of the batch"
                for i in exc.indexes
            }
        ) from exc
    except WriteUnavailable as exc:
        raise _write_unavailable(ctx, exc) from exc
    if conflicts:
        raise Problem(
            409,
            "conflict",
            "event_id already stored with different content; nothing stored",
            field_errors={
                f"[{i}].event_id": "already stored with different content" for i in conflicts
            },
        )
    return _batch_response(outcome)


def _invalid_batch(errors: dict[str, str]) -> Problem:
    return validation_error(errors, f"{len(errors)} field(s) failed validation; nothing stored")


class _StreamedBatch:
    """A batch's events, checked (nesting, schema, rules) and normalized as the COPY consumes
    them; iterating again replays the ones already made (the store re-reads it after
    creating a missing partition)."""

    def __init__(self, ctx: AppContext, items: list[dict[str, Any]]) -> None:
        self.ctx = ctx
        self.items = items
        self.events: list[dict[str, Any]] = []
        self.errors: dict[str, str] = {}
        self._next = 0

    def __iter__(self):
        yield from list(self.events)
        while self._next < len(self.items):
            index = self._next
            self._next += 1
            item = self.items[index]
            errors = nesting_errors(item, self.ctx.settings.max_json_depth, (index,))
            errors = errors or self.ctx.validator.body_errors("createAuditEvent", item, (index,))
            if errors:
                self.errors.update(errors)
                continue
            try:
                event = _normalize(self.ctx, item, f"[{index}].")
            except Problem as problem:
                self.errors.update(problem.field_errors or {})
                continue
            self.events.append(event)
            yield event

    def complete(self) -> list[dict[str, Any]]:
        """Every event, or the validation problem naming every failing field."""
        for _ in self:
            pass
        if self.errors:
            raise _invalid_batch(self.errors)
        return self.events


async def _stream_batch(ctx: AppContext, items: list[dict[str, Any]]) -> Response:
    """The common batch (no client-chosen ids, no parents): PostgreSQL stores the first rows
    while the rest are still being normalized."""
    batch = _StreamedBatch(ctx, items)
    try:
        outcome = await ctx.writer.write_stream(batch, batch.complete)
    except WriteUnavailable as exc:
        raise _write_unavailable(ctx, exc) from exc
    return _batch_response(outcome)


def _batch_response(outcome: Any) -> Response:
    ids = [e["event_id"] for e in outcome.records]
    if outcome.status == "queued":
        return json_response(
            {
                "event_ids": ids,
                "status": "accepted",
                "message": f"database unavailable; {len(ids)} events queued "
                "durably and will be stored",
            },
            202,
        )
    status = 201 if outcome.status == "created" else 200
    return json_response({"event_ids": ids, "message": f"{len(ids)} events stored"}, status)


def _query_from_params(ctx: AppContext, params: dict[str, Any]) -> audit_events.EventQuery:
    now = dt.datetime.now(dt.UTC)
    errors: dict[str, str] = {}
    bounds: dict[str, dt.datetime | None] = {"since": None, "until": None}
    for name in bounds:
        if params.get(name):
            try:
                bounds[name] = parse_time_bound(params[name], now)
            except ValueError as exc:
                errors[name] = str(exc)
    data = None
    if params.get("event_data") is not None:
        # The same strict decoder as request bodies: what it rejects could not match anyway
        # (or could not even be sent to PostgreSQL, like a NUL).
        reason = ""
        try:
            data = decode_json(params["event_data"].encode(), ctx.settings.max_json_depth)
        except Problem as exc:
            reason = "; ".join((exc.field_errors or {"": exc.detail}).values())
        if not isinstance(data, dict):
            errors["event_data"] = "must be a JSON object" + (f" ({reason})" if reason else "")
    if params.get("offset") is not None and params.get("cursor"):
        errors["cursor"] = "use either offset or cursor, not both"
    if errors:
        for field in errors:
            count_failure(field, "format")
        raise validation_error(errors)
    return audit_events.EventQuery(
        filters=params,
        since=bounds["since"],
        until=bounds["until"],
        event_data=data,
        descending=params["order"] == "desc",
        limit=params["limit"],
        offset=params.get("offset"),
        cursor=params.get("cursor"),
        count_limit=ctx.settings.count_limit,
    )


async def query_events(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    params = ctx.validator.parameters("queryAuditEvents", request)
    query = _query_from_params(ctx, params)
    try:
        async with ctx.db.connection() as conn:
            page = await audit_events.query_events(conn, query)
    except audit_events.BadCursor as exc:
        count_failure("cursor", "format")
        raise validation_error({"cursor": str(exc)}) from exc
    except StoreUnavailable as exc:
        raise unavailable(f"database unavailable: {exc}", ctx.settings.retry_after) from exc
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
    ctx: AppContext = request.app.state.ctx
    event_id = parse_uuid_path(request, "event_id")
    try:
        async with ctx.db.connection() as conn:
            event = await audit_events.get_event(conn, event_id)
    except StoreUnavailable as exc:
        raise unavailable(f"database unavailable: {exc}", ctx.settings.retry_after) from exc
    if event is None:
        raise not_found(f"no audit event {event_id}")
    return json_response(event)


async def event_types(request: Request) -> Response:
    return json_response(
        {
            "event_types": [
                {
                    "event_type": t.event_type,
                    "event_category": t.event_category,
                    "event_action": t.event_action,
                    "service": t.service,
                }
                for t in EVENT_TYPES.values()
            ]
        }
    )
