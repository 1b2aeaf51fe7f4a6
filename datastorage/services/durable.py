"""The durable-write fallback every write shares (docs/operations.md).

A write goes to PostgreSQL; when the database is unavailable (a transient failure, see
`store.errors`) its records go to the DLQ instead and the outcome is "queued" (the caller
answers 202); when the DLQ cannot take them either, `WriteUnavailable` (503). Everything that
is not transient (validation, conflicts) propagates before any queueing. `replay()` is the
drain worker's way back in, with the same SQL the write path uses.

This is the only place that decides between the database and the DLQ: the audit and
notification services hand it a store call and the records to queue if the call cannot run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from datastorage.config import Settings
from datastorage.dlq.queue import DeadLetterQueue
from datastorage.domain.events import emitting_service
from datastorage.metrics import AUDIT_TRACES, PARTITION_CREATED, WRITE_DURATION, labelled
from datastorage.store import audit_replay, notifications
from datastorage.store.errors import is_transient
from datastorage.store.pool import Database

log = logging.getLogger(__name__)

AUDIT_KIND = "audit_events"
NOTIFICATION_KIND = "notifications"
TABLES = {AUDIT_KIND: "audit_events", NOTIFICATION_KIND: "notification_audit"}

T = TypeVar("T")


class WriteUnavailable(Exception):
    """Neither the database nor the DLQ can take the write; answer 503."""


@dataclass(frozen=True)
class Queued:
    """The database was unavailable: these records wait in the DLQ."""

    records: list[dict[str, Any]]


def partition_created(names: list[str]) -> None:
    for name in names:
        log.info("created partition %s on the write path", name)
        PARTITION_CREATED.labels("write_path").inc()


class DurableWriter:
    """Runs a store write, or queues its records when the database is unavailable.

    `on_queued` is called after every successful append (the runtime wakes the drain worker).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        dlq: DeadLetterQueue | None,
        *,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.dlq = dlq
        self._on_queued = on_queued

    async def write(
        self,
        kind: str,
        store: Callable[[], Awaitable[T]],
        records: Callable[[], list[dict[str, Any]]],
    ) -> T | Queued:
        """`store()`'s result, or `Queued(records())` when the database is unavailable."""
        started = time.perf_counter()
        try:
            result = await store()
        except Exception as exc:
            if not is_transient(exc):
                raise
            return await self._queue(kind, records(), exc)
        labelled(WRITE_DURATION, TABLES[kind]).observe(time.perf_counter() - started)
        return result

    async def _queue(
        self, kind: str, records: list[dict[str, Any]], cause: BaseException
    ) -> Queued:
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
        self._on_queued()
        log.warning(
            "database unavailable (%s): %d %s record(s) queued in the DLQ",
            cause,
            len(records),
            kind,
        )
        return Queued(records)

    async def replay(self, kind: str, records: list[dict[str, Any]]) -> None:
        """The drain worker's callback: idempotent insert of queued records, one transaction."""
        started = time.perf_counter()
        async with self.db.connection() as conn:
            if kind == AUDIT_KIND:
                await audit_replay.replay_events(
                    conn,
                    records,
                    lock_timeout=self.settings.partition_lock_timeout,
                    leaf_hashes=self.settings.log_on,
                    on_partition_created=partition_created,
                )
            else:
                await notifications.replay_notifications(conn, records)
        WRITE_DURATION.labels(TABLES[kind]).observe(time.perf_counter() - started)
