"""Recording and listing notification-audit records (docs/api.md)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from datastorage.config import Settings
from datastorage.domain.errors import InvalidInput
from datastorage.domain.events import parse_timestamp
from datastorage.metrics import AUDIT_TRACES
from datastorage.schemas import count_failure
from datastorage.services.audit import Outcome
from datastorage.services.durable import NOTIFICATION_KIND, DurableWriter, Queued
from datastorage.store import notifications
from datastorage.store.pool import Database
from datastorage.store.replica import ReadRouter


class NotificationService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        writer: DurableWriter,
        reads: ReadRouter | None = None,
    ) -> None:
        """`reads` routes the list to a read replica (default: on `db`)."""
        self.settings = settings
        self.db = db
        self.writer = writer
        self.reads = reads or ReadRouter(settings, db, None)

    def accept(self, body: dict[str, Any], recorded_by: str | None = None) -> dict[str, Any]:
        """The stored form of a record (schema already checked), or `InvalidInput`.
        `recorded_by`: the authenticated caller, never a body field."""
        try:
            sent_at = parse_timestamp(body["sent_at"])
        except ValueError as exc:
            count_failure("sent_at", "format")
            raise InvalidInput({"sent_at": f"not a valid RFC 3339 timestamp ({exc})"}) from exc
        skew = dt.timedelta(seconds=self.settings.timestamp_max_skew)
        if sent_at > dt.datetime.now(dt.UTC) + skew:
            count_failure("sent_at", "future")
            raise InvalidInput(
                {"sent_at": f"must not lie more than {int(skew.total_seconds())} s in the future"}
            )
        return {
            **{k: body.get(k) for k in notifications.FIELDS},
            "sent_at": sent_at.isoformat(),
            "id": str(uuid.uuid4()),
            "recorded_by": recorded_by,
        }

    async def record(self, body: dict[str, Any], recorded_by: str | None = None) -> Outcome:
        """Raises `InvalidInput`, `store.errors.Conflict` or `WriteUnavailable`."""
        record = self.accept(body, recorded_by)

        async def insert() -> dict[str, Any]:
            async with self.db.connection() as conn:
                return await notifications.insert_notification(conn, record)

        result = await self.writer.write(NOTIFICATION_KIND, insert, lambda: [record])
        if isinstance(result, Queued):
            return Outcome("queued", result.records)
        AUDIT_TRACES.labels("notification", "success").inc()
        return Outcome("created", [result])

    async def list(
        self, filters: dict[str, Any], limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        return await self.reads.read(
            lambda conn: notifications.list_notifications(conn, filters, limit, offset)
        )
