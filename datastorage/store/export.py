"""Reading every event an export matches (docs/compliance.md): one snapshot, a server-side cursor.

The rows come in batches from a named cursor inside one REPEATABLE READ transaction, so memory
stays constant however many rows match, and the rows, their leaf indexes and the latest
checkpoint are read in the same snapshot. Filters are the list endpoint's
(`audit_queries.filter_clause`); the order is chronological, (event_timestamp, event_id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from datastorage.store.audit_queries import EventQuery, filter_clause
from datastorage.store.audit_rows import COLUMNS, SELECT_LIST, row_to_event
from datastorage.store.ledger import StoredCheckpoint, latest_checkpoint


@asynccontextmanager
async def snapshot(conn: AsyncConnection) -> AsyncIterator[StoredCheckpoint | None]:
    """A read-only snapshot for the whole export; yields the latest checkpoint in it."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield await latest_checkpoint(conn)


async def event_batches(
    conn: AsyncConnection, query: EventQuery, batch_size: int
) -> AsyncIterator[list[tuple[dict[str, Any], int | None]]]:
    """(event as GET shows it, leaf index or None) in batches; call inside `snapshot`."""
    where, params = filter_clause(query)
    # USING merges event_id and event_date, so the filters' unqualified names stay unambiguous
    # and partition pruning still applies to audit_events.event_date.
    statement = sql.SQL(
        "SELECT {cols}, leaf_index FROM audit_events "
        "LEFT JOIN log_leaves USING (event_id, event_date) "
        "WHERE {where} ORDER BY event_timestamp, event_id"
    ).format(cols=SELECT_LIST, where=where)
    async with conn.cursor(name="datastorage_export", row_factory=dict_row) as cursor:
        cursor.itersize = batch_size
        await cursor.execute(statement, params)
        while rows := await cursor.fetchmany(batch_size):
            yield [(row_to_event(row), row["leaf_index"]) for row in rows]


_RESTORE = (
    "INSERT INTO audit_events SELECT * FROM jsonb_populate_recordset(NULL::audit_events, %s) "
    "ON CONFLICT DO NOTHING"
)


async def restore_events(conn: AsyncConnection, events: list[dict[str, Any]]) -> int:
    """Insert exported events back (an archive restore) with every stored value they carry;
    events already present are left alone. Returns how many were inserted."""
    renamed = {name: column for column, name in COLUMNS if name != column}
    records = [{renamed.get(key, key): value for key, value in e.items()} for e in events]
    cur = await conn.execute(_RESTORE, (Jsonb(records),))
    return cur.rowcount


async def count_month(conn: AsyncConnection, month_table: str) -> int:
    """Rows of one month's partition table (what its archive must hold)."""
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(month_table))
    (count,) = await (await conn.execute(query)).fetchone()
    return count
