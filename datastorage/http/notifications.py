"""Notification-audit endpoints (docs/api.md): parse, call `NotificationService`, respond."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from datastorage.http.authentication import recorded_by
from datastorage.http.body import read_json
from datastorage.http.context import accepted_response, context, json_response, offset_page


async def create_notification(request: Request) -> Response:
    ctx = context(request)
    body = await read_json(request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth)
    ctx.validator.body("createNotificationAudit", body)
    outcome = await ctx.runtime.notifications.record(body, recorded_by(request.scope))
    stored = outcome.records[0]
    if outcome.status == "queued":
        # No `id` yet: the database assigns it when the DLQ is replayed (docs/compatibility.md).
        ids = {"notification_id": stored["notification_id"]}
        return accepted_response(ids, "notification record")
    return json_response(stored, 201)


async def list_notifications(request: Request) -> Response:
    ctx = context(request)
    params = ctx.validator.parameters("listNotificationAudit", request)
    limit, offset = params["limit"], params["offset"]
    rows, total = await ctx.runtime.notifications.list(params, limit, offset)
    return offset_page(rows, limit, offset, total)
