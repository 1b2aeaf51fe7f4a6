"""SQL of legal holds (docs/compliance.md): the `legal_holds` table, the lock that orders hold
changes against retirement, and the retention queries that spare held events.

The ordering rule: a hold change (place or release) and the retirement of a month never
interleave. A hold change takes `HOLDS_LOCK` shared for its transaction (changes do not block
each other); retirement takes it exclusively, on its own session, around "which rows are
held?" and the detach/delete that acts on the answer. Whichever comes first wins completely:
a hold committed before the pass looks is seen by it; a hold that arrives while the pass holds
the lock waits until the month's retirement is done. Hold changes take the lock before they
touch anything else, so they never hold a lock the pass's `DETACH ... CONCURRENTLY` waits for.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from datastorage.domain.events import format_timestamp
from datastorage.store.partitions import partition_name

# Advisory lock key shared by hold changes (shared) and retirement (exclusive).
HOLDS_LOCK = 0x64617461_0008

_COLUMNS = "correlation_id, reason, case_id, placed_by, placed_at"


def hold_to_api(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "placed_at": format_timestamp(row["placed_at"])}


async def lock_for_change(conn: AsyncConnection) -> None:
    """Inside the hold change's transaction, before any other statement."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (HOLDS_LOCK,))


async def lock_for_retirement(conn: AsyncConnection) -> None:
    """Session lock on the maintenance connection (autocommit): waits for hold changes in
    flight, then keeps new ones waiting until `unlock_after_retirement`."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (HOLDS_LOCK,))


async def unlock_after_retirement(conn: AsyncConnection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (HOLDS_LOCK,))


async def place(
    conn: AsyncConnection, correlation_id: str, reason: str, case_id: str | None, placed_by: Any
) -> tuple[dict[str, Any], bool]:
    """Insert the hold unless the correlation is already held: (the hold, created)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"INSERT INTO legal_holds (correlation_id, reason, case_id, placed_by) "
        f"VALUES (%s, %s, %s, %s) ON CONFLICT (correlation_id) DO NOTHING RETURNING {_COLUMNS}",
        (correlation_id, reason, case_id, placed_by),
    )
    row = await cur.fetchone()
    if row is not None:
        return hold_to_api(row), True
    existing = await get(conn, correlation_id)
    assert existing is not None  # the conflicting row is committed and we hold the lock
    return existing, False


async def get(conn: AsyncConnection, correlation_id: str) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {_COLUMNS} FROM legal_holds WHERE correlation_id = %s", (correlation_id,)
    )
    row = await cur.fetchone()
    return None if row is None else hold_to_api(row)


async def release(conn: AsyncConnection, correlation_id: str) -> dict[str, Any] | None:
    """Delete the hold; returns it, or None when the correlation was not held."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"DELETE FROM legal_holds WHERE correlation_id = %s RETURNING {_COLUMNS}",
        (correlation_id,),
    )
    row = await cur.fetchone()
    return None if row is None else hold_to_api(row)


async def list_holds(
    conn: AsyncConnection, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of holds, oldest first, and the total, in one snapshot."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        (total,) = await (await conn.execute("SELECT count(*) FROM legal_holds")).fetchone()
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"SELECT {_COLUMNS} FROM legal_holds ORDER BY placed_at, correlation_id "
            "LIMIT %s OFFSET %s",
            (limit, offset),
        )
        rows = await cur.fetchall()
    return [hold_to_api(r) for r in rows], total


# ---- retention (the maintenance connection, under lock_for_retirement) -----------------------


async def month_has_held_events(conn: AsyncConnection, month: dt.date) -> bool:
    """Whether the month's table (attached or detached) holds an event of a held correlation."""
    query = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM {} e JOIN legal_holds h USING (correlation_id))"
    ).format(sql.Identifier(partition_name(month)))
    (held,) = await (await conn.execute(query)).fetchone()
    return bool(held)


async def delete_unheld_events(conn: AsyncConnection, month: dt.date) -> int:
    """Delete the month's events of correlations that are not held; returns how many. The
    partition stays attached with only held rows, so list, GET and proofs keep serving them
    unchanged (the rows are not rewritten)."""
    query = sql.SQL(
        "DELETE FROM {} e WHERE NOT EXISTS "
        "(SELECT 1 FROM legal_holds h WHERE h.correlation_id = e.correlation_id)"
    ).format(sql.Identifier(partition_name(month)))
    async with conn.transaction():
        cur = await conn.execute(query)
    return cur.rowcount
