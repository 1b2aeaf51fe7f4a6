"""What every handler shares: the application context and the JSON response helper."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response

from datastorage.audit import AuditWriter
from datastorage.config import Settings
from datastorage.http.validation import RequestValidator
from datastorage.store.pool import Database


@dataclass
class AppContext:
    settings: Settings
    db: Database
    validator: RequestValidator
    writer: AuditWriter
    dlq: Any = None
    drain: Any = None
    drain_task: asyncio.Task | None = None
    catalog: Any = None
    shutting_down: bool = False
    background: set[asyncio.Task] = field(default_factory=set)

    def spawn(self, coro: Any) -> None:
        """Run work after the response without losing the task to garbage collection."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )
