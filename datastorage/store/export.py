"""Reading every event an export matches (SPEC §13): one snapshot, a server-side cursor.

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

from datastorage.store.audit_queries import EventQuery, filter_clause
from datastorage.store.audit_rows import SELECT_LIST, row_to_event
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
