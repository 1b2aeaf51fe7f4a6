"""`GET /api/v1/audit/export` (docs/compliance.md): the list endpoint's filters, a streamed
attachment.

The first chunk is produced before the response starts, so a database that is down, or a
filter that fails, still answers with a problem; after that the body streams, pulled by the
client's reads (Starlette sends each chunk before asking for the next).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from datastorage.http.audit import event_filters
from datastorage.http.context import context
from datastorage.http.validation import strict_query
from datastorage.services.export import export_query

_MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
_PAGING = ("limit", "offset", "cursor", "order")


async def export_events(request: Request) -> Response:
    ctx = context(request)
    # The format is checked with the filters, so one 400 names every failing parameter.
    own, own_errors = ctx.validator.parameter_values("exportAuditEvents", strict_query(request))
    params, data, bounds = event_filters(ctx, request, lambda _: dict(own_errors))
    fmt = own["format"]
    filters = {k: v for k, v in params.items() if k not in _PAGING}
    query = export_query(filters, event_data=data, **bounds)
    if fmt == "csv":
        chunks = ctx.runtime.export.csv(query)
    else:
        given = {k: v for k, v in request.query_params.items() if k not in _PAGING}
        chunks = ctx.runtime.export.ndjson(query, given)
    first = await anext(chunks)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _prepend(first, chunks),
        media_type=_MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="audit-export-{stamp}.{fmt}"'},
    )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
