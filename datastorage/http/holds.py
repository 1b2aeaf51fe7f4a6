"""Legal-hold endpoints (docs/compliance.md): parse, call `LegalHolds`, respond.

`placed_by` / `released_by` is the reviewed caller (None when authentication is off), never
a body field.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from datastorage.http.authentication import recorded_by
from datastorage.http.body import read_json
from datastorage.http.context import context, json_response, offset_page


async def place_hold(request: Request) -> Response:
    ctx = context(request)
    params = ctx.validator.parameters("placeLegalHold", request)
    body = await read_json(request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth)
    ctx.validator.body("placeLegalHold", body)
    hold, created = await ctx.runtime.holds.place(
        params["correlation_id"], body["reason"], body.get("case_id"), recorded_by(request.scope)
    )
    return json_response(hold, 201 if created else 200)


async def get_hold(request: Request) -> Response:
    ctx = context(request)
    params = ctx.validator.parameters("getLegalHold", request)
    return json_response(await ctx.runtime.holds.get(params["correlation_id"]))


async def list_holds(request: Request) -> Response:
    ctx = context(request)
    params = ctx.validator.parameters("listLegalHolds", request)
    limit, offset = params["limit"], params["offset"]
    rows, total = await ctx.runtime.holds.list(limit, offset)
    return offset_page(rows, limit, offset, total)


async def release_hold(request: Request) -> Response:
    ctx = context(request)
    params = ctx.validator.parameters("releaseLegalHold", request)
    released = await ctx.runtime.holds.release(
        params["correlation_id"], params["reason"], recorded_by(request.scope)
    )
    return json_response(released)
