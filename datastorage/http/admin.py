"""Admin endpoints: DLQ status (docs/operations.md): depth, age, dead letters and bytes per stream,
and the room the queue has left before appends are refused."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from datastorage.http.context import AppContext, json_response
from datastorage.http.problems import unavailable


async def dlq_status(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    if ctx.runtime.dlq is None:
        return json_response({"streams": [], "backend": None, "free_bytes": None})
    try:
        stats = await ctx.runtime.dlq.stats()
    except Exception as exc:
        raise unavailable(f"DLQ unavailable: {exc}", ctx.settings.retry_after) from exc
    return json_response(
        {
            "backend": ctx.runtime.dlq.name,
            "free_bytes": stats[0].free_bytes if stats else None,
            "streams": [
                {
                    "stream": s.stream,
                    "depth": s.depth,
                    "oldest_age_seconds": s.oldest_age_seconds,
                    "dead_lettered": s.dead_lettered,
                    "bytes": s.bytes,
                }
                for s in stats
            ],
        }
    )
