"""Writing audit events: one event, a group of concurrent single writes, an atomic batch, and
a streamed batch; the partition create-and-retry they share.

Every row that enters audit_events goes through one of three statements, each in one function
of this module: `_insert_row` (one event: the catalog's self-audit events), `_insert_rows` (a
group commit) and `copy_rows` (batches, streamed batches, and the DLQ replay in
`store.audit_replay`, whose fallback merge is the only other insert). A step that must see
every stored event belongs in those functions: each of them (and the merge) queues the rows it
stored for the tamper-evident log in the same transaction (`store.ledger.registering`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from psycopg import AsyncConnection, errors, sql

from datastorage.domain.events import same_content
from datastorage.store import ledger, partitions
from datastorage.store.audit_rows import (
    STORED_COLUMNS,
    STORED_LIST,
    copy_row,
    created_at_now,
    fetch_by_ids,
    json_rows,
    parent_dates,
    row_values,
    stamp,
)
from datastorage.store.errors import Conflict, is_missing_partition

# Each statement also queues the rows it stored for the tamper-evident log
# (`ledger.registering`); COPY cannot, so `copy_rows` queues its rows right after the COPY.
_INSERT = ledger.registering(
    sql.SQL(
        "INSERT INTO audit_events ({cols}) VALUES ({vals}) "
        "ON CONFLICT (event_id, event_date) DO NOTHING "
        "RETURNING event_id, event_date, created_at"
    ).format(cols=STORED_LIST, vals=sql.SQL(", ").join(sql.Placeholder() * len(STORED_COLUMNS))),
    sql.SQL("SELECT created_at FROM stored"),
)

# Group commit: the rows travel as one JSON array (a single parameter, serialized by orjson in
# C) that PostgreSQL turns into audit_events records; per-parameter adaptation in Python was
# the largest client cost of this statement.
_INSERT_GROUP = ledger.registering(
    sql.SQL(
        "INSERT INTO audit_events ({cols}) SELECT {cols} "
        "FROM jsonb_populate_recordset(NULL::audit_events, %s::jsonb) "
        "ON CONFLICT (event_id, event_date) DO NOTHING RETURNING event_id, event_date"
    ).format(cols=STORED_LIST),
    sql.SQL("SELECT event_id::text FROM stored"),
)


# The statements as bytes, composed once: psycopg composes a `sql.Composed` again at every
# execute (escaping each of the 27 column names through libpq: 60-100 µs a statement), while
# it parses a bytes query once and keeps it. The names are plain ASCII, so escaping them
# without a connection gives the same text.
_INSERT_SQL = _INSERT.as_bytes()
_INSERT_GROUP_SQL = _INSERT_GROUP.as_bytes()


@cache
def _copy_sql(table: str) -> bytes:
    return (
        sql.SQL("COPY {table} ({cols}) FROM STDIN")
        .format(table=sql.Identifier(table), cols=STORED_LIST)
        .as_bytes()
    )


class UnknownParent(ValueError):
    """parent_event_id names no stored event; `indexes` are the batch positions affected."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__("parent_event_id names no stored event")
        self.indexes = indexes


async def attach_parent_dates(
    conn: AsyncConnection, events: Sequence[dict[str, Any]], *, strict: bool = True
) -> None:
    """Fill parent_event_date from stored parents or parents in the same batch. `strict`:
    a parent that is not stored raises UnknownParent (a replay stores the event anyway)."""
    in_batch = {e["event_id"]: e["event_date"] for e in events}
    wanted = [
        e["parent_event_id"]
        for e in events
        if e.get("parent_event_id") and e["parent_event_id"] not in in_batch
    ]
    stored = await parent_dates(conn, wanted) if wanted else {}
    missing = []
    for index, event in enumerate(events):
        parent = event.get("parent_event_id")
        if parent:
            date = in_batch.get(parent) or stored.get(parent)
            if date is None:
                missing.append(index)
            event["parent_event_date"] = date
    if missing and strict:
        raise UnknownParent(missing)


@dataclass
class WriteResult:
    created: bool
    event: dict[str, Any]


# ---- the statements that store rows ----------------------------------------------------------


# `leaf_hashes` (the log is on): queue each stored event with its leaf hash (`store.ledger`).


async def _insert_row(conn: AsyncConnection, event: dict[str, Any], leaf_hashes: bool) -> Any:
    """INSERT one event; None when (event_id, event_date) is already stored."""
    stamp([event])
    queued = ledger.Queued.of([event], leaf_hashes)
    cur = await conn.execute(_INSERT_SQL, (*row_values(event), queued.hashed()), prepare=True)
    return await cur.fetchone()


async def _insert_rows(
    conn: AsyncConnection, events: Sequence[dict[str, Any]], leaf_hashes: bool
) -> set[str]:
    """INSERT events in one statement; returns the event_ids stored (not already there)."""
    stamp(events)
    queued = ledger.Queued.of(events, leaf_hashes)
    params = (json_rows(events), queued.hashed())
    cur = await conn.execute(_INSERT_GROUP_SQL, params, prepare=True)
    return {row[0] for row in await cur.fetchall()}


async def copy_rows(
    conn: AsyncConnection,
    events: Iterable[dict[str, Any]],
    *,
    leaf_hashes: bool,
    table: str = "audit_events",
    complete: Callable[[], Any] | None = None,
) -> ledger.Queued:
    """COPY events into `table` (audit_events, or the replay's temp table), one row as the
    iterable yields it; `complete()` runs after the last row, before the COPY ends. Rows copied
    into audit_events are then queued for the log in the same transaction; returns what was
    (or, for the temp table, is to be) queued."""
    queued = ledger.Queued(leaf_hashes)
    created_at = created_at_now()
    async with conn.cursor().copy(_copy_sql(table)) as copy:
        for event in events:
            event["created_at"] = created_at
            queued.add(event)
            await copy.write_row(copy_row(event))
        if complete is not None:
            complete()
    if table == "audit_events":
        await ledger.register(conn, queued)
    return queued


# ---- partitions -----------------------------------------------------------------------------


async def with_partitions(
    conn: AsyncConnection,
    events: Iterable[Mapping[str, Any]],
    lock_timeout: float,
    on_partition_created: Any,
    statement: Callable[[], Awaitable[Any]],
) -> Any:
    """Run `statement` in a transaction (a savepoint inside the caller's); if a month it writes
    has no partition, create the months and run it once more."""
    for attempt in (1, 2):
        try:
            async with conn.transaction():
                return await statement()
        except errors.CheckViolation as exc:
            if attempt == 2 or not is_missing_partition(exc):
                raise
            created, failed = await ensure_partitions(conn, events, lock_timeout)
            if created and on_partition_created:
                on_partition_created(created)
            if failed:
                raise next(iter(failed.values())) from exc
    raise AssertionError("unreachable")


async def ensure_partitions(
    conn: AsyncConnection, events: Iterable[Mapping[str, Any]], lock_timeout: float
) -> tuple[list[str], dict[dt.date, Exception]]:
    """Create the months these events need. Returns (partitions created, month -> failure):
    a month that cannot be created fails only its own events."""
    created: list[str] = []
    failed: dict[dt.date, Exception] = {}
    for month in sorted({month_of_event(e) for e in events}):
        try:
            if await partitions.ensure_month(conn, month, lock_timeout):
                created.append(partitions.partition_name(month))
        except Exception as exc:  # noqa: BLE001 — returned to the caller, per month
            failed[month] = exc
    return created, failed


def month_of_event(event: Mapping[str, Any]) -> dt.date:
    return partitions.month_of(dt.date.fromisoformat(event["event_date"]))


async def copy_with_partitions(
    conn: AsyncConnection,
    events: Iterable[dict[str, Any]],
    lock_timeout: float,
    on_partition_created: Any,
    *,
    leaf_hashes: bool,
    complete: Callable[[], Any] | None = None,
) -> None:
    """copy_rows into audit_events, creating missing months (the rows are then read again)."""
    await with_partitions(
        conn,
        events,
        lock_timeout,
        on_partition_created,
        lambda: copy_rows(conn, events, leaf_hashes=leaf_hashes, complete=complete),
    )


# ---- one event ------------------------------------------------------------------------------


async def insert_event(
    conn: AsyncConnection,
    event: dict[str, Any],
    *,
    client_id: bool,
    lock_timeout: float,
    leaf_hashes: bool,
    on_partition_created: Any = None,
) -> WriteResult:
    """Store one event. A resend of a stored event_id returns the stored one (created=False),
    or raises Conflict when the content differs."""
    if event.get("parent_event_id"):
        await attach_parent_dates(conn, [event])
    if client_id:
        existing = (await fetch_by_ids(conn, [event["event_id"]])).get(event["event_id"])
        if existing is not None:
            return _resend(existing, event)
    row = await with_partitions(
        conn,
        [event],
        lock_timeout,
        on_partition_created,
        lambda: _insert_row(conn, event, leaf_hashes),
    )
    if row is None:  # same (event_id, event_date) committed concurrently
        existing = (await fetch_by_ids(conn, [event["event_id"]]))[event["event_id"]]
        return _resend(existing, event)
    return WriteResult(True, event)


def _resend(existing: dict[str, Any], event: dict[str, Any]) -> WriteResult:
    if not same_content(existing, event):
        raise Conflict(f"event_id {event['event_id']} is already stored with different content")
    return WriteResult(False, existing)


def _resend_result(existing: dict[str, Any], event: dict[str, Any]) -> WriteResult | Exception:
    try:
        return _resend(existing, event)
    except Conflict as exc:
        return exc


# ---- group commit ---------------------------------------------------------------------------
# Concurrent single-event writes are stored together: one statement and one commit for the
# whole group. Each caller still learns its own fate.


async def insert_group(
    conn: AsyncConnection, items: Sequence[tuple[dict[str, Any], bool]], *, leaf_hashes: bool
) -> list[WriteResult | Exception]:
    """Store (event, client_chose_id) pairs with one INSERT. Per item: a WriteResult
    (created, or an identical resend) or the exception that item alone must raise (Conflict,
    UnknownParent). Failures of the statement itself (database down, missing partition)
    propagate for the caller to handle for the whole group.

    No BEGIN/COMMIT around it: the one INSERT (which also queues its rows for the log) is a
    transaction by itself on these autocommit connections, and the look-ups before and after
    it decide nothing a concurrent commit could change (a row stored meanwhile is caught by ON
    CONFLICT and read back as a resend). Two round trips fewer per group."""
    results: list[WriteResult | Exception | None] = [None] * len(items)
    parents = [e["parent_event_id"] for e, _ in items if e.get("parent_event_id")]
    if parents:
        dates = await parent_dates(conn, parents)
        for index, (event, _) in enumerate(items):
            parent = event.get("parent_event_id")
            if parent:
                event["parent_event_date"] = dates.get(parent)
                if parent not in dates:
                    results[index] = UnknownParent([0])
    chosen = [e["event_id"] for i, (e, c) in enumerate(items) if c and results[i] is None]
    existing = await fetch_by_ids(conn, chosen) if chosen else {}
    for index, (event, _) in enumerate(items):
        if results[index] is None and event["event_id"] in existing:
            results[index] = _resend_result(existing[event["event_id"]], event)
    pending = [i for i, r in enumerate(results) if r is None]
    if pending:
        inserted = await _insert_rows(conn, [items[i][0] for i in pending], leaf_hashes)
        raced = []
        for index in pending:
            event_id = items[index][0]["event_id"]
            if event_id in inserted:
                inserted.discard(event_id)  # a second item with this id is a resend
                results[index] = WriteResult(True, items[index][0])
            else:
                raced.append(index)
        if raced:
            stored = await fetch_by_ids(conn, [items[i][0]["event_id"] for i in raced])
            for index in raced:
                event = items[index][0]
                results[index] = _resend_result(stored[event["event_id"]], event)
    return results  # type: ignore[return-value]


# ---- batches --------------------------------------------------------------------------------


async def insert_batch(
    conn: AsyncConnection,
    events: list[dict[str, Any]],
    *,
    client_ids: Collection[str],
    lock_timeout: float,
    leaf_hashes: bool,
    on_partition_created: Any = None,
) -> tuple[int, list[int]]:
    """Store a batch atomically with COPY. Items whose client-chosen event_id is already stored
    with the same content are skipped (idempotent resend); ids the server generated cannot be
    stored yet. Returns (rows inserted, indexes in conflict)."""
    async with conn.transaction():
        await attach_parent_dates(conn, events)
        chosen = [e["event_id"] for e in events if e["event_id"] in client_ids]
        existing = await fetch_by_ids(conn, chosen) if chosen else {}
        conflicts = [
            i
            for i, e in enumerate(events)
            if e["event_id"] in existing and not same_content(existing[e["event_id"]], e)
        ]
        if conflicts:
            return 0, conflicts
        fresh = [e for e in events if e["event_id"] not in existing]
        if fresh:
            await copy_with_partitions(
                conn, fresh, lock_timeout, on_partition_created, leaf_hashes=leaf_hashes
            )
        return len(fresh), []


async def copy_events(
    conn: AsyncConnection,
    events: Iterable[dict[str, Any]],
    *,
    complete: Callable[[], Any],
    lock_timeout: float,
    leaf_hashes: bool,
    on_partition_created: Any = None,
) -> None:
    """Store, with one COPY, events that name no parent and no client-chosen id, writing each
    row as the iterable yields it: the caller may still be producing them, and PostgreSQL
    works on the first rows meanwhile. `complete()` runs after the last row, before the
    commit; if it raises, nothing is stored. On a missing partition the iterable is read
    again (it must replay what it yielded)."""
    await copy_with_partitions(
        conn, events, lock_timeout, on_partition_created, leaf_hashes=leaf_hashes, complete=complete
    )
