"""The durable write path shared by the HTTP handlers, the catalog and the operator.

A record goes to PostgreSQL; when the database is unavailable (a transient failure, see
`store.errors`) it goes to the DLQ instead and the caller answers 202; when the DLQ cannot take
it either, `WriteUnavailable` makes the caller answer 503. Everything that is not transient
(validation, conflicts) is decided before any queueing. The drain worker replays what the DLQ
holds through `replay()`, with the same SQL the write path uses.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from datastorage.config import Settings
from datastorage.domain.events import EVENT_TYPES, TimeBounds, emitting_service, normalize_event
from datastorage.group_commit import GroupCommitter
from datastorage.metrics import (
    AUDIT_LAG,
    AUDIT_TRACES,
    PARTITION_CREATED,
    UNKNOWN_EVENT_TYPES,
    WRITE_DURATION,
)
from datastorage.store import audit_events, notifications
from datastorage.store.errors import is_transient
from datastorage.store.pool import Database

log = logging.getLogger(__name__)

AUDIT_KIND = "audit_events"
NOTIFICATION_KIND = "notifications"


class WriteUnavailable(Exception):
    """Neither the database nor the DLQ can take the write; answer 503."""


@dataclass(frozen=True)
class Outcome:
    status: str  # "created" | "duplicate" | "queued" | "conflict" (batch only)
    records: list[dict[str, Any]]


def _partition_created(names: list[str]) -> None:
    for name in names:
        log.info("created partition %s on the write path", name)
        PARTITION_CREATED.labels("write_path").inc()


class AuditWriter:
    def __init__(self, settings: Settings, db: Database, dlq: Any = None, drain: Any = None):
        self.settings = settings
        self.db = db
        self.dlq = dlq
        self.drain = drain
        self.group = GroupCommitter(
            db,
            lock_timeout=settings.partition_lock_timeout,
            on_partition_created=_partition_created,
        )
        self.bounds = TimeBounds(
            dt.timedelta(seconds=settings.timestamp_max_age),
            dt.timedelta(seconds=settings.timestamp_max_skew),
        )

    # -- audit events -----------------------------------------------------------------------

    def normalize(self, body: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        event = normalize_event(body, self.bounds, dt.datetime.now(dt.UTC), prefix)
        if event["event_type"] not in EVENT_TYPES:
            UNKNOWN_EVENT_TYPES.labels(event["event_category"]).inc()
        return event

    async def write_event(self, event: dict[str, Any], *, client_id: bool) -> Outcome:
        started = time.perf_counter()
        try:
            result = await self.group.submit(event, client_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return await self._queue(AUDIT_KIND, [event], exc)
        WRITE_DURATION.labels("audit_events").observe(time.perf_counter() - started)
        if result.created:
            self._count_success([event])
            return Outcome("created", [result.event])
        return Outcome("duplicate", [result.event])

    async def write_batch(
        self, events: list[dict[str, Any]], client_ids: set[str]
    ) -> tuple[Outcome, list[int]]:
        """Returns the outcome and the batch positions whose event_id conflicts (then nothing
        was stored)."""
        started = time.perf_counter()
        try:
            async with self.db.connection() as conn:
                inserted, conflicts = await audit_events.insert_batch(
                    conn,
                    events,
                    client_ids=client_ids,
                    lock_timeout=self.settings.partition_lock_timeout,
                    on_partition_created=_partition_created,
                )
        except Exception as exc:
            if not is_transient(exc):
                raise
            return await self._queue(AUDIT_KIND, events, exc), []
        if conflicts:
            return Outcome("conflict", []), conflicts
        WRITE_DURATION.labels("audit_events").observe(time.perf_counter() - started)
        self._count_success(events)
        return Outcome("created" if inserted else "duplicate", events), []

    async def write_stream(
        self, events: Iterable[dict[str, Any]], complete: Callable[[], list[dict[str, Any]]]
    ) -> Outcome:
        """A batch of events naming no parent and no client-chosen id, copied while it is
        still being normalized. `complete()` finishes the normalization and returns every
        event, or raises (invalid batch): then nothing is stored and nothing queued."""
        started = time.perf_counter()
        try:
            async with self.db.connection() as conn:
                await audit_events.copy_events(
                    conn,
                    events,
                    complete=complete,
                    lock_timeout=self.settings.partition_lock_timeout,
                    on_partition_created=_partition_created,
                )
        except Exception as exc:
            if not is_transient(exc):
                raise
            return await self._queue(AUDIT_KIND, complete(), exc)
        WRITE_DURATION.labels("audit_events").observe(time.perf_counter() - started)
        records = complete()
        self._count_success(records)
        return Outcome("created", records)

    def _count_success(self, events: list[dict[str, Any]]) -> None:
        now = dt.datetime.now(dt.UTC)
        by_service: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_service.setdefault(emitting_service(event), []).append(event)
        for service, group in by_service.items():
            AUDIT_TRACES.labels(service, "success").inc(len(group))
            lag = AUDIT_LAG.labels(service)
            for event in group:
                stamp = dt.datetime.fromisoformat(event["event_timestamp"])
                lag.observe(max((now - stamp).total_seconds(), 0.0))

    # -- notifications ----------------------------------------------------------------------

    async def write_notification(self, record: dict[str, Any]) -> Outcome:
        record = {**record, "id": record.get("id") or str(uuid.uuid4())}
        started = time.perf_counter()
        try:
            async with self.db.connection() as conn:
                stored = await notifications.insert_notification(conn, record)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return await self._queue(NOTIFICATION_KIND, [record], exc)
        WRITE_DURATION.labels("notification_audit").observe(time.perf_counter() - started)
        AUDIT_TRACES.labels("notification", "success").inc()
        return Outcome("created", [stored])

    # -- DLQ --------------------------------------------------------------------------------

    async def _queue(
        self, kind: str, records: list[dict[str, Any]], cause: BaseException
    ) -> Outcome:
        if self.dlq is None:
            raise WriteUnavailable(f"database unavailable ({cause}) and no DLQ is configured")
        try:
            await self.dlq.append(kind, records)
        except Exception as exc:
            log.error("DLQ append failed after database failure: %s", exc)
            raise WriteUnavailable(f"database unavailable and DLQ failed: {exc}") from exc
        for record in records:
            service = emitting_service(record) if kind == AUDIT_KIND else "notification"
            AUDIT_TRACES.labels(service, "dlq_fallback").inc()
        if self.drain is not None:
            self.drain.notify()
        log.warning(
            "database unavailable (%s): %d %s record(s) queued in the DLQ",
            cause,
            len(records),
            kind,
        )
        return Outcome("queued", records)

    async def replay(self, kind: str, records: list[dict[str, Any]]) -> None:
        """The drain worker's callback: idempotent insert of queued records, one transaction."""
        started = time.perf_counter()
        async with self.db.connection() as conn:
            if kind == AUDIT_KIND:
                await audit_events.replay_events(
                    conn,
                    records,
                    lock_timeout=self.settings.partition_lock_timeout,
                    on_partition_created=_partition_created,
                )
                table = "audit_events"
            else:
                await notifications.replay_notifications(conn, records)
                table = "notification_audit"
        WRITE_DURATION.labels(table).observe(time.perf_counter() - started)
