"""Health endpoints (docs/operations.md): live, ready (degraded while only the database is down),
full."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from datastorage.http.context import AppContext, json_response
from datastorage.metrics import exposition

CHECK_TIMEOUT = 2.0


async def _check(probe: Any) -> dict[str, str]:
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT)
    except Exception as exc:  # any failure means "down"; the message says which
        return {"status": "down", "error": (str(exc) or type(exc).__name__)[:300]}
    return {"status": "up"}


async def _checks(ctx: AppContext) -> dict[str, dict[str, str]]:
    database, dlq = await asyncio.gather(
        _check(ctx.runtime.db.ping),
        _check(ctx.runtime.dlq.ping) if ctx.runtime.dlq is not None else _not_configured(),
    )
    return {"database": database, "dlq": dlq}


async def _not_configured() -> dict[str, str]:
    return {"status": "disabled", "error": "no DLQ configured (DATASTORAGE_DLQ_URL unset)"}


def _unavailable(ctx: AppContext, body: dict[str, Any]) -> Response:
    return json_response(body, 503, {"Retry-After": str(ctx.settings.retry_after)})


async def live(request: Request) -> Response:
    return json_response({"status": "alive"})


async def ready(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    if ctx.shutting_down:
        return _unavailable(ctx, {"status": "not_ready", "reason": "shutting down", "checks": {}})
    checks = await _checks(ctx)
    database_up = checks["database"]["status"] == "up"
    dlq_up = checks["dlq"]["status"] == "up"
    if database_up:
        return json_response({"status": "ready", "checks": checks})
    if dlq_up:
        return json_response({"status": "degraded", "checks": checks})
    return _unavailable(ctx, {"status": "not_ready", "checks": checks})


async def health(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    checks = await _checks(ctx)
    healthy = checks["database"]["status"] == "up" and checks["dlq"]["status"] != "down"
    if healthy and not ctx.shutting_down:
        return json_response({"status": "healthy", "checks": checks})
    # `error`: the one-line reason clients of the reference contract read (docs/compatibility.md).
    failing = [f"{name}: {c['error']}" for name, c in checks.items() if c["status"] == "down"]
    error = "; ".join(failing) or "shutting down"
    return _unavailable(ctx, {"status": "unhealthy", "error": error, "checks": checks})


async def metrics(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    ctx.runtime.db.update_metrics()
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
