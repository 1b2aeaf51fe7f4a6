"""Reading every event an export matches (docs/compliance.md): one snapshot, a server-side cursor.

The rows come in batches from a named cursor inside one REPEATABLE READ transaction, so memory
stays constant however many rows match, and the rows, their leaf indexes and the latest
checkpoint are read in the same snapshot. Filters are the list endpoint's
(`audit_queries.filter_clause`); the order is chronological, (event_timestamp, event_id).

The rows are plain tuples in binary format, not events: an export writes a million of them, and
building each event's dict the way GET does (`audit_rows.row_to_event`) cost more than all the
rest. The values are the ones a JSON writer turns into GET's text directly, each loaded by
psycopg's C loaders: ids as text, timestamps as naive UTC datetimes (`AT TIME ZONE 'UTC'`,
whatever the session's zone), dates, numbers, and event_data as the UTF-8 bytes of its stored
JSON text (unparsed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, AsyncServerCursor, sql
from psycopg.types.json import Jsonb

from datastorage.store.audit_queries import EventQuery, filter_clause
from datastorage.store.audit_rows import STORED_COLUMNS
from datastorage.store.ledger import StoredCheckpoint, latest_checkpoint

# The API names of an export row's values, in GET's order.
EXPORT_FIELDS: tuple[str, ...] = tuple(name for _, name in STORED_COLUMNS)
_AS_LOADED = {
    "event_id": "{}::text",
    "parent_event_id": "{}::text",
    "event_timestamp": "{} AT TIME ZONE 'UTC'",
    "created_at": "{} AT TIME ZONE 'UTC'",
    "event_data": "convert_to({}::text, 'UTF8')",
}
_EXPORT_COLUMNS = sql.SQL(", ").join(
    sql.SQL(_AS_LOADED.get(c, "{}")).format(sql.Identifier(c)) for c, _ in STORED_COLUMNS
)


@asynccontextmanager
async def snapshot(conn: AsyncConnection) -> AsyncIterator[StoredCheckpoint | None]:
    """A read-only snapshot for the whole export; yields the latest checkpoint in it."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield await latest_checkpoint(conn)


async def event_rows(
    conn: AsyncConnection,
    query: EventQuery,
    batch_size: int,
    *,
    leaf_indexes: bool,
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Rows of `EXPORT_FIELDS` values, plus the leaf index (or None) last when `leaf_indexes`,
    in batches. Call inside `snapshot`."""
    where, params = filter_clause(query)
    if leaf_indexes:
        # USING merges event_id and event_date, so the filters' unqualified names stay
        # unambiguous and partition pruning still applies to audit_events.event_date.
        statement = sql.SQL(
            "SELECT {cols}, leaf_index FROM audit_events "
            "LEFT JOIN log_leaves USING (event_id, event_date) "
            "WHERE {where} ORDER BY event_timestamp, event_id"
        )
    else:
        statement = sql.SQL(
            "SELECT {cols} FROM audit_events WHERE {where} ORDER BY event_timestamp, event_id"
        )
    statement = statement.format(cols=_EXPORT_COLUMNS, where=where)
    async with conn.cursor(name="datastorage_export", binary=True) as cursor:
        await cursor.execute(statement, params)
        async for rows in _read_ahead(cursor, batch_size):
            yield rows


async def _read_ahead(cursor: AsyncServerCursor, size: int) -> AsyncIterator[list[Any]]:
    """The cursor's batches, each next FETCH sent before a batch is handed over: PostgreSQL
    produces the next rows while the caller formats and sends these. At most two batches
    are in memory, and a caller that stops pulling stops the reads."""
    pending = asyncio.ensure_future(cursor.fetchmany(size))
    try:
        while rows := await pending:
            pending = asyncio.ensure_future(cursor.fetchmany(size))
            await asyncio.sleep(0)  # the task sends its FETCH now, not when the caller next waits
            yield rows
    finally:
        if not pending.done():
            # The connection is busy until this FETCH ends; let it end before anyone reuses it.
            await asyncio.wait([pending])
        if not pending.cancelled():
            pending.exception()  # retrieved: a failure after the caller left is not reported


_RESTORE = (
    "INSERT INTO audit_events SELECT * FROM jsonb_populate_recordset(NULL::audit_events, %s) "
    "ON CONFLICT DO NOTHING"
)


async def restore_events(conn: AsyncConnection, events: list[dict[str, Any]]) -> int:
    """Insert exported events back (an archive restore) with every stored value they carry;
    events already present are left alone. Returns how many were inserted."""
    renamed = {name: column for column, name in STORED_COLUMNS if name != column}
    records = [{renamed.get(key, key): value for key, value in e.items()} for e in events]
    cur = await conn.execute(_RESTORE, (Jsonb(records),))
    return cur.rowcount


async def count_month(conn: AsyncConnection, month_table: str) -> int:
    """Rows of one month's partition table (what its archive must hold)."""
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(month_table))
    (count,) = await (await conn.execute(query)).fetchone()
    return count
