"""Admin endpoints: DLQ status (SPEC §5)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from datastorage.http.context import AppContext, json_response
from datastorage.http.problems import unavailable


async def dlq_status(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    if ctx.runtime.dlq is None:
        return json_response({"streams": [], "backend": None})
    try:
        stats = await ctx.runtime.dlq.stats()
    except Exception as exc:
        raise unavailable(f"DLQ unavailable: {exc}", ctx.settings.retry_after) from exc
    return json_response(
        {
            "backend": ctx.runtime.dlq.name,
            "streams": [
                {
                    "stream": s.stream,
                    "depth": s.depth,
                    "oldest_age_seconds": s.oldest_age_seconds,
                    "dead_lettered": s.dead_lettered,
                }
                for s in stats
            ],
        }
    )
