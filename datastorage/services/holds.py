"""Legal holds (docs/compliance.md): place, read, list and release holds by correlation id.

Each change commits together with its self-audit event (`datastorage.legal_hold.placed` or
`.released`, correlation_id = the held correlation, so the hold shows up in that remediation's
timeline). A change takes the holds lock shared before anything else (`store.holds`), which
orders it against the retirement of a month: see `operator/maintenance.py`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from datastorage.domain.errors import NotFound
from datastorage.domain.events import format_timestamp
from datastorage.services.audit import AuditService, self_audit_body
from datastorage.store import holds as store
from datastorage.store.pool import Database


class HoldNotFound(NotFound):
    def __init__(self, correlation_id: str) -> None:
        super().__init__(f"correlation {correlation_id!r} is not under legal hold")


class LegalHolds:
    def __init__(self, db: Database, audit: AuditService) -> None:
        self.db = db
        self.audit = audit

    async def place(
        self, correlation_id: str, reason: str, case_id: str | None, placed_by: str | None
    ) -> tuple[dict[str, Any], bool]:
        """(the hold, created). Placing a hold that exists changes nothing (and records
        nothing): the first placement's reason and author stand."""
        async with self.db.connection() as conn, conn.transaction():
            await store.lock_for_change(conn)
            hold, created = await store.place(conn, correlation_id, reason, case_id, placed_by)
            if created:
                await self.audit.record_in(
                    conn, hold_event("placed", hold, placed_by, hold), placed_by
                )
        return hold, created

    async def get(self, correlation_id: str) -> dict[str, Any]:
        async with self.db.connection() as conn:
            hold = await store.get(conn, correlation_id)
        if hold is None:
            raise HoldNotFound(correlation_id)
        return hold

    async def list(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        async with self.db.connection() as conn:
            return await store.list_holds(conn, limit, offset)

    async def release(
        self, correlation_id: str, reason: str, released_by: str | None
    ) -> dict[str, Any]:
        """Release the hold; returns the released hold with who released it, when and why."""
        async with self.db.connection() as conn, conn.transaction():
            await store.lock_for_change(conn)
            hold = await store.release(conn, correlation_id)
            if hold is None:
                raise HoldNotFound(correlation_id)
            released = {
                **hold,
                "released_by": released_by,
                "released_at": format_timestamp(dt.datetime.now(dt.UTC)),
                "release_reason": reason,
            }
            await self.audit.record_in(
                conn, hold_event("released", hold, released_by, released), released_by
            )
        return released


def hold_event(
    action: str, hold: dict[str, Any], actor: str | None, data: dict[str, Any]
) -> dict[str, Any]:
    """A `datastorage.legal_hold.<action>` self-audit event as an API request body."""
    return self_audit_body(
        event_type=f"datastorage.legal_hold.{action}",
        category="orchestration",
        action=action,
        correlation_id=hold["correlation_id"],
        resource_type="legal_hold",
        resource_id=hold["correlation_id"],
        event_data=data,
        actor=actor,
    )
