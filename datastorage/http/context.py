"""What every handler shares: the process's runtime, the request checks, and JSON responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from datastorage.auth.authenticator import Authenticator
from datastorage.auth.ratelimit import RateLimiter
from datastorage.http.validation import RequestValidator
from datastorage.runtime import Runtime
from datastorage.services.ledger import LogService


@dataclass
class AppContext:
    runtime: Runtime
    validator: RequestValidator
    shutting_down: bool = False  # readiness answers 503 once set (SIGTERM)
    authenticator: Authenticator | None = None  # DATASTORAGE_AUTH=kubernetes
    limiter: RateLimiter | None = None  # the per-caller write budget, when configured
    log: LogService | None = None  # the tamper-evident log's reads (None: the log is off)

    @property
    def settings(self):
        return self.runtime.settings

    def begin_shutdown(self) -> None:
        self.shutting_down = True


def context(request: Request) -> AppContext:
    return request.app.state.ctx


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


def accepted_response(payload: dict[str, Any], what: str) -> Response:
    """202: the database was unavailable and `what` waits durably in the DLQ."""
    message = f"database unavailable; {what} queued durably and will be stored"
    return json_response({**payload, "status": "accepted", "message": message}, 202)


def offset_page(rows: list[Any], limit: int, offset: int, total: int) -> Response:
    """The `{data, pagination}` envelope of an offset-paged list."""
    pagination = {"limit": limit, "offset": offset, "total": total}
    return json_response(
        {"data": rows, "pagination": {**pagination, "has_more": offset + len(rows) < total}}
    )
