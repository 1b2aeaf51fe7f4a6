"""Recording and reading audit events (docs/api.md): the use cases behind `/api/v1/audit/events`.

Three write paths, chosen here and nowhere else:
- one event → group commit (`GroupCommitter`): concurrent requests share one statement;
- a batch whose items name no client-chosen id and no parent (the common batch) → streamed
  COPY: each item is checked and normalized while PostgreSQL copies the ones before it;
- any other batch → existence and parent look-ups, then one COPY (`store.insert_batch`).
Each goes through `DurableWriter`, so a database outage queues the events instead.

Schema checks belong to the caller (the HTTP layer owns the request document); this module
applies the rules beyond the schema (sizes, timestamps, categories, parents, duplicates) and
raises `InvalidInput` naming every failing field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from datastorage.config import Settings
from datastorage.domain.errors import InvalidInput, NotFound
from datastorage.domain.events import (
    EVENT_TYPES,
    EventRuleError,
    TimeBounds,
    emitting_service,
    format_timestamp,
    normalize_event,
)
from datastorage.metrics import (
    AUDIT_LAG,
    AUDIT_TRACES,
    UNKNOWN_EVENT_TYPES,
    labelled,
    observe_many,
)
from datastorage.schemas import count_failure
from datastorage.services.durable import AUDIT_KIND, DurableWriter, Queued, partition_created
from datastorage.services.group_commit import GroupCommitter
from datastorage.store import audit_queries, audit_writes, cursors, partitions
from datastorage.store.errors import Conflict
from datastorage.store.pool import Database
from datastorage.store.replica import ReadRouter

# (index, item) -> {field path: message} for one batch item's request-document checks.
ItemErrors = Callable[[int, Any], dict[str, str]]
# the whole batch -> {field path: message}
BatchErrors = Callable[[list[Any]], dict[str, str]]


@dataclass(frozen=True)
class Outcome:
    status: str  # "created" | "duplicate" | "queued"
    records: list[dict[str, Any]]


class EventConflict(Conflict):
    """A client-chosen event_id is stored with other content."""

    def __init__(self, detail: str, event_id: str) -> None:
        super().__init__(detail)
        self.event_id = event_id


class BatchConflict(Exception):
    """Batch items whose client-chosen event_id is stored with other content; nothing stored."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__("event_id already stored with different content; nothing stored")
        self.indexes = indexes


def invalid_batch(errors: dict[str, str]) -> InvalidInput:
    return InvalidInput(errors, f"{len(errors)} field(s) failed validation; nothing stored")


SELF_ACTOR_ID = "datastorage"  # actor of the events the service writes about its own changes
SELF_EVENT_VERSION = "1.0"


def self_audit_body(
    *,
    event_type: str,
    category: str,
    action: str,
    correlation_id: str,
    resource_type: str,
    resource_id: str,
    event_data: dict[str, Any],
    actor: str | None = None,
    **optional: Any,
) -> dict[str, Any]:
    """An event the service writes about itself (catalog changes and searches, legal holds),
    as an API request body: outcome success, now, by `actor` (a user) or else the service."""
    return {
        "version": SELF_EVENT_VERSION,
        "event_type": event_type,
        "event_timestamp": format_timestamp(dt.datetime.now(dt.UTC)),
        "event_category": category,
        "event_action": action,
        "event_outcome": "success",
        "correlation_id": correlation_id,
        "actor_type": "user" if actor else "service",
        "actor_id": actor or SELF_ACTOR_ID,
        "resource_type": resource_type,
        "resource_id": resource_id,
        **optional,
        "event_data": event_data,
    }


class AuditService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        writer: DurableWriter,
        reads: ReadRouter | None = None,
    ) -> None:
        """`reads` routes queries to a read replica (default: every read on `db`)."""
        self.settings = settings
        self.db = db
        self.writer = writer
        self.reads = reads or ReadRouter(settings, db, None)
        self.group = GroupCommitter(
            db,
            lock_timeout=settings.partition_lock_timeout,
            on_partition_created=partition_created,
            leaf_hashes=settings.log_on,
        )
        self.bounds = TimeBounds(
            dt.timedelta(seconds=settings.timestamp_max_age),
            dt.timedelta(seconds=settings.timestamp_max_skew),
        )

    # -- rules --------------------------------------------------------------------------------

    def event_from(self, body: dict[str, Any], recorded_by: str | None = None) -> dict[str, Any]:
        """The stored form of an event the service writes itself (catalog self-audit) on
        behalf of the caller `recorded_by`."""
        event = normalize_event(body, self.bounds, dt.datetime.now(dt.UTC), "", recorded_by)
        if event["event_type"] not in EVENT_TYPES:
            UNKNOWN_EVENT_TYPES.labels(event["event_category"]).inc()
        return event

    def accept(
        self, body: dict[str, Any], prefix: str = "", recorded_by: str | None = None
    ) -> dict[str, Any]:
        """The stored form of a client's event (schema already checked), or `InvalidInput`.
        `recorded_by`: the authenticated caller (None with auth off)."""
        errors = self._event_data_errors(body, prefix)
        try:
            event = normalize_event(body, self.bounds, dt.datetime.now(dt.UTC), prefix, recorded_by)
        except EventRuleError as exc:
            for field in exc.field_errors:
                count_failure(field, "rule")
            errors.update(exc.field_errors)
        if errors:
            raise InvalidInput(errors)
        if event["event_type"] not in EVENT_TYPES:
            UNKNOWN_EVENT_TYPES.labels(event["event_category"]).inc()
        return event

    def _event_data_errors(self, body: dict[str, Any], prefix: str) -> dict[str, str]:
        limit = self.settings.max_event_data_bytes
        size = len(orjson.dumps(body["event_data"]))
        if size <= limit:
            return {}
        count_failure(prefix + "event_data", "size")
        return {prefix + "event_data": f"must serialize to at most {limit} bytes (got {size})"}

    # -- writes -------------------------------------------------------------------------------

    async def record(self, body: dict[str, Any], recorded_by: str | None = None) -> Outcome:
        """One client event. Raises `InvalidInput`, `EventConflict` or `WriteUnavailable`."""
        event = self.accept(body, recorded_by=recorded_by)
        try:
            return await self.record_event(event, client_id=bool(body.get("event_id")))
        except audit_writes.UnknownParent as exc:
            count_failure("parent_event_id", "unknown")
            raise InvalidInput({"parent_event_id": "must name a stored event"}) from exc
        except Conflict as exc:
            raise EventConflict(str(exc), event["event_id"]) from exc

    async def record_event(self, event: dict[str, Any], *, client_id: bool = False) -> Outcome:
        """One event already in its stored form (`accept` or `event_from`)."""
        result = await self.writer.write(
            AUDIT_KIND, lambda: self.group.submit(event, client_id), lambda: [event]
        )
        if isinstance(result, Queued):
            return Outcome("queued", result.records)
        if not result.created:
            return Outcome("duplicate", [result.event])
        self._count_success([event])
        return Outcome("created", [result.event])

    async def record_batch(
        self,
        items: list[Any],
        *,
        item_errors: ItemErrors,
        batch_errors: BatchErrors,
        recorded_by: str | None = None,
    ) -> Outcome:
        """A batch, atomically: every item stored (or queued), or none and every failing field
        named (`InvalidInput`), or `BatchConflict`, `WriteUnavailable`."""
        if len(items) > self.settings.max_batch_items:
            count_failure("body", "maxItems")
            raise InvalidInput({"body": f"must have at most {self.settings.max_batch_items} items"})
        # A null parent_event_id means none (docs/compatibility.md): such items stream too.
        if items and all(
            isinstance(item, dict)
            and "event_id" not in item
            and item.get("parent_event_id") is None
            for item in items
        ):
            return await self._record_stream(_StreamedBatch(self, items, item_errors, recorded_by))
        events, client_ids = self._accept_all(items, batch_errors(items), recorded_by)
        try:
            result = await self.writer.write(
                AUDIT_KIND, lambda: self._insert_batch(events, client_ids), lambda: events
            )
        except audit_writes.UnknownParent as exc:
            raise InvalidInput(
                {
                    f"[{i}].parent_event_id": "must name a stored event or an earlier item "
                    "of the batch"
                    for i in exc.indexes
                }
            ) from exc
        if isinstance(result, Queued):
            return Outcome("queued", result.records)
        inserted, conflicts = result
        if conflicts:
            raise BatchConflict(conflicts)
        self._count_success(events)
        return Outcome("created" if inserted else "duplicate", events)

    def _accept_all(
        self, items: list[Any], errors: dict[str, str], recorded_by: str | None
    ) -> tuple[list[dict[str, Any]], set[str]]:
        events: list[dict[str, Any]] = []
        client_ids: set[str] = set()
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            prefix = f"[{index}]."
            if errors and any(key.startswith(prefix) or key == f"[{index}]" for key in errors):
                continue
            try:
                event = self.accept(item, prefix, recorded_by)
            except InvalidInput as exc:
                errors.update(exc.field_errors)
                continue
            if event["event_id"] in seen:
                errors[prefix + "event_id"] = (
                    f"duplicates the event_id of item [{seen[event['event_id']]}]"
                )
                count_failure("[].event_id", "duplicate")
            seen[event["event_id"]] = index
            if item.get("event_id"):
                client_ids.add(event["event_id"])
            events.append(event)
        if errors:
            raise invalid_batch(errors)
        return events, client_ids

    async def _insert_batch(
        self, events: list[dict[str, Any]], client_ids: set[str]
    ) -> tuple[bool, list[int]]:
        async with self.db.connection() as conn:
            return await audit_writes.insert_batch(
                conn,
                events,
                client_ids=client_ids,
                lock_timeout=self.settings.partition_lock_timeout,
                leaf_hashes=self.settings.log_on,
                on_partition_created=partition_created,
            )

    async def _record_stream(self, batch: _StreamedBatch) -> Outcome:
        """Copied while it is still being normalized; an invalid item fails the COPY before
        commit (nothing stored) and nothing is queued for an invalid batch."""

        async def copy() -> None:
            async with self.db.connection() as conn:
                await audit_writes.copy_events(
                    conn,
                    batch,
                    complete=batch.complete,
                    lock_timeout=self.settings.partition_lock_timeout,
                    leaf_hashes=self.settings.log_on,
                    on_partition_created=partition_created,
                )

        result = await self.writer.write(AUDIT_KIND, copy, batch.complete)
        if isinstance(result, Queued):
            return Outcome("queued", result.records)
        records = batch.complete()
        self._count_success(records)
        return Outcome("created", records)

    def _count_success(self, events: list[dict[str, Any]]) -> None:
        now = dt.datetime.now(dt.UTC)
        by_service: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_service.setdefault(emitting_service(event), []).append(event)
        for service, group in by_service.items():
            labelled(AUDIT_TRACES, service, "success").inc(len(group))
            observe_many(
                labelled(AUDIT_LAG, service),
                [
                    max(
                        (now - dt.datetime.fromisoformat(e["event_timestamp"])).total_seconds(), 0.0
                    )
                    for e in group
                ],
            )

    async def record_in(
        self, conn: Any, body: dict[str, Any], recorded_by: str | None = None
    ) -> dict[str, Any]:
        """Store a self-audit event (a body this service builds) on behalf of `recorded_by` in
        the caller's transaction, so it commits with the change it records. The month is ensured first: a failed insert
        would abort the caller's transaction, so the write path's create-and-retry cannot run."""
        event = self.event_from(body, recorded_by)
        month = partitions.month_of(dt.date.fromisoformat(event["event_date"]))
        lock_timeout = self.settings.partition_lock_timeout
        await partitions.ensure_month(conn, month, lock_timeout)
        await audit_writes.insert_event(
            conn,
            event,
            client_id=False,
            lock_timeout=lock_timeout,
            leaf_hashes=self.settings.log_on,
        )
        return event

    # -- reads --------------------------------------------------------------------------------

    async def query(
        self,
        filters: dict[str, Any],
        *,
        since: dt.datetime | None,
        until: dt.datetime | None,
        event_data: dict[str, Any] | None,
    ) -> tuple[audit_queries.EventQuery, audit_queries.EventPage]:
        """A page of events; `filters` are the validated query parameters of docs/api.md."""
        query = audit_queries.EventQuery(
            filters=filters,
            since=since,
            until=until,
            event_data=event_data,
            descending=filters["order"] == "desc",
            limit=filters["limit"],
            offset=filters.get("offset"),
            cursor=filters.get("cursor"),
            count_limit=self.settings.count_limit,
        )
        try:
            page = await self.reads.read(lambda conn: audit_queries.query_events(conn, query))
        except cursors.BadCursor as exc:
            count_failure("cursor", "format")
            raise InvalidInput({"cursor": str(exc)}) from exc
        return query, page

    async def get(self, event_id: str) -> dict[str, Any]:
        # Events never change once stored: a replica that has one has the right one, and a
        # replica that has not replayed it yet sends the read on to the primary.
        event = await self.reads.read(
            lambda conn: audit_queries.get_event(conn, event_id), miss=lambda found: found is None
        )
        if event is None:
            raise NotFound(f"no audit event {event_id}")
        return event

    @staticmethod
    def event_types() -> list[dict[str, str]]:
        return [
            {
                "event_type": t.event_type,
                "event_category": t.event_category,
                "event_action": t.event_action,
                "service": t.service,
            }
            for t in EVENT_TYPES.values()
        ]


class _StreamedBatch:
    """A batch's events, checked (`item_errors`, then the rules) and normalized as the COPY
    consumes them; iterating again replays the ones already made (the store re-reads it after
    creating a missing partition)."""

    def __init__(
        self,
        service: AuditService,
        items: list[Any],
        item_errors: ItemErrors,
        recorded_by: str | None,
    ) -> None:
        self.service = service
        self.items = items
        self.item_errors = item_errors
        self.recorded_by = recorded_by
        self.events: list[dict[str, Any]] = []
        self.errors: dict[str, str] = {}
        self._next = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from list(self.events)
        while self._next < len(self.items):
            index = self._next
            self._next += 1
            item = self.items[index]
            errors = self.item_errors(index, item)
            if errors:
                self.errors.update(errors)
                continue
            try:
                event = self.service.accept(item, f"[{index}].", self.recorded_by)
            except InvalidInput as exc:
                self.errors.update(exc.field_errors)
                continue
            self.events.append(event)
            yield event

    def complete(self) -> list[dict[str, Any]]:
        """Every event, or `InvalidInput` naming every failing field."""
        for _ in self:
            pass
        if self.errors:
            raise invalid_batch(self.errors)
        return self.events
