"""Notification-audit endpoints (SPEC §3.3)."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import Response

from datastorage.audit import WriteUnavailable
from datastorage.domain.events import parse_timestamp
from datastorage.http.context import AppContext, json_response
from datastorage.http.middleware import read_json
from datastorage.http.problems import Problem, unavailable, validation_error
from datastorage.schemas import count_failure
from datastorage.store import notifications
from datastorage.store.errors import Conflict, StoreUnavailable


async def create_notification(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    body = await read_json(request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth)
    ctx.validator.body("createNotificationAudit", body)
    try:
        sent_at = parse_timestamp(body["sent_at"])
    except ValueError as exc:
        count_failure("sent_at", "format")
        raise validation_error({"sent_at": f"not a valid RFC 3339 timestamp ({exc})"}) from exc
    skew = dt.timedelta(seconds=ctx.settings.timestamp_max_skew)
    if sent_at > dt.datetime.now(dt.UTC) + skew:
        count_failure("sent_at", "future")
        raise validation_error(
            {"sent_at": f"must not lie more than {int(skew.total_seconds())} s in the future"}
        )
    record = {**{k: body.get(k) for k in notifications.FIELDS}, "sent_at": sent_at.isoformat()}
    try:
        outcome = await ctx.writer.write_notification(record)
    except Conflict as exc:
        raise Problem(409, "conflict", str(exc)) from exc
    except WriteUnavailable as exc:
        raise unavailable(
            f"the write cannot be stored or queued right now: {exc}", ctx.settings.retry_after
        ) from exc
    stored = outcome.records[0]
    if outcome.status == "queued":
        return json_response(
            {
                "id": stored["id"],
                "notification_id": stored["notification_id"],
                "status": "accepted",
                "message": "database unavailable; notification record queued "
                "durably and will be stored",
            },
            202,
        )
    return json_response(stored, 201)


async def list_notifications(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    params = ctx.validator.parameters("listNotificationAudit", request)
    try:
        async with ctx.db.connection() as conn:
            rows, total = await notifications.list_notifications(
                conn, params, params["limit"], params["offset"]
            )
    except StoreUnavailable as exc:
        raise unavailable(f"database unavailable: {exc}", ctx.settings.retry_after) from exc
    return json_response(
        {
            "data": rows,
            "pagination": {
                "limit": params["limit"],
                "offset": params["offset"],
                "total": total,
                "has_more": params["offset"] + len(rows) < total,
            },
        }
    )
