"""Replaying audit events from the DLQ: an idempotent bulk insert.

A record may be replayed again after a crash between the commit and the DLQ acknowledgement,
so a replay must store each event at most once. The fast path is the batch COPY; when an event
is already stored that COPY fails as a whole, and the batch goes through a temporary table and
`INSERT ... SELECT ... ON CONFLICT DO NOTHING` instead (`_merge`, the one insert into
audit_events outside `store.audit_writes`).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, errors, sql

from datastorage.store import ledger
from datastorage.store.audit_rows import STORED_LIST
from datastorage.store.audit_writes import (
    attach_parent_dates,
    copy_rows,
    copy_with_partitions,
    with_partitions,
)

_TEMP_TABLE = "replay_events"
_CREATE_TEMP = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS {temp} "
    "(LIKE audit_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
).format(temp=sql.Identifier(_TEMP_TABLE))
# Only the rows this statement inserts are queued for the log: one already stored was queued
# when it was stored.
_MERGE = ledger.registering(
    sql.SQL(
        "INSERT INTO audit_events ({cols}) SELECT {cols} FROM {temp} "
        "ORDER BY event_timestamp ON CONFLICT (event_id, event_date) DO NOTHING "
        "RETURNING event_id, event_date"
    ).format(cols=STORED_LIST, temp=sql.Identifier(_TEMP_TABLE)),
    sql.SQL("SELECT count(*) FROM stored"),
)


async def _merge(conn: AsyncConnection, queued: ledger.Queued) -> None:
    """Move the temp table's rows into audit_events, skipping those already stored (and queue
    the rows stored for the log, with their leaf hashes from `queued`)."""
    await conn.execute(_MERGE, (queued.hashed(),))


async def replay_events(
    conn: AsyncConnection,
    events: list[dict[str, Any]],
    *,
    lock_timeout: float,
    leaf_hashes: bool,
    on_partition_created: Any = None,
) -> None:
    """Idempotent bulk insert for DLQ replay, one transaction, keyed by (event_id, event_date).
    A parent that is not stored leaves parent_event_date empty rather than failing. A record
    queued by a version without recorded_by stores NULL there."""
    for event in events:
        event.setdefault("recorded_by", None)
    async with conn.transaction():
        await attach_parent_dates(conn, events, strict=False)
        try:
            await copy_with_partitions(
                conn, events, lock_timeout, on_partition_created, leaf_hashes=leaf_hashes
            )
            return
        except errors.UniqueViolation:
            pass
        await conn.execute(_CREATE_TEMP)
        queued = await copy_rows(conn, events, leaf_hashes=leaf_hashes, table=_TEMP_TABLE)
        await with_partitions(
            conn, events, lock_timeout, on_partition_created, lambda: _merge(conn, queued)
        )
