"""Monthly partitions of audit_events: naming, creation, inspection, maintenance
(docs/operations.md).

Every partition covers one UTC calendar month and is named `audit_events_YYYY_MM`. Creation is
idempotent and also re-attaches a same-named table that was detached. The functions take an
open psycopg connection (sync or async variants) so migrations, the write path and the operator
share one definition of the DDL.

The maintenance statements (last section) run on an autocommit connection: `DETACH PARTITION
... CONCURRENTLY` refuses to run inside a transaction block. Each is idempotent, so a pass that
was interrupted anywhere is completed by the next one (a detach left pending is finalized, a
table detached but not yet dropped is dropped).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg import AsyncConnection, Connection, errors, sql

from datastorage.config import Settings
from datastorage.store.connect import connect_async

PARENT = "audit_events"
NAME_PATTERN = re.compile(r"^audit_events_(\d{4})_(\d{2})$")


def month_of(day: dt.date) -> dt.date:
    return day.replace(day=1)


def add_months(month: dt.date, count: int) -> dt.date:
    index = month.year * 12 + (month.month - 1) + count
    return dt.date(index // 12, index % 12 + 1, 1)


def partition_name(month: dt.date) -> str:
    return f"{PARENT}_{month.year:04d}_{month.month:02d}"


def month_from_name(name: str) -> dt.date | None:
    match = NAME_PATTERN.match(name)
    if not match:
        return None
    year, month = int(match.group(1)), int(match.group(2))
    return dt.date(year, month, 1) if 1 <= month <= 12 else None


def current_month(now: dt.datetime | None = None) -> dt.date:
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).date().replace(day=1)


def window(premake: int, now: dt.datetime | None = None) -> list[dt.date]:
    """The months that must exist at all times: current + `premake` ahead."""
    first = current_month(now)
    return [add_months(first, offset) for offset in range(premake + 1)]


_STATE_SQL = """
SELECT c.relname,
       EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid
               AND i.inhparent = 'audit_events'::regclass) AS attached
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname = %s
"""


def _create_sql(month: dt.date) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
    ).format(
        sql.Identifier(partition_name(month)),
        sql.Identifier(PARENT),
        sql.Literal(month.isoformat()),
        sql.Literal(add_months(month, 1).isoformat()),
    )


def _attach_sql(month: dt.date) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(PARENT),
        sql.Identifier(partition_name(month)),
        sql.Literal(month.isoformat()),
        sql.Literal(add_months(month, 1).isoformat()),
    )


def _lock_timeout_sql(seconds: float) -> sql.Composed:
    return sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(seconds * 1000)}ms"))


def ensure_month_partition(conn: Connection, month: dt.date) -> str | None:
    """Create (or re-attach) the month's partition. Returns 'created', 'attached' or None."""
    with conn.transaction():
        row = conn.execute(_STATE_SQL, (partition_name(month),)).fetchone()
        if row is None:
            conn.execute(_create_sql(month))
            return "created"
        if not row[1]:
            conn.execute(_attach_sql(month))
            return "attached"
    return None


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    month: dt.date
    attached: bool
    rows_estimate: int
    size_bytes: int
    indexes_ok: bool
    detach_pending: bool = False  # a DETACH ... CONCURRENTLY that was interrupted


_LIST_SQL = """
SELECT c.relname,
       EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid
               AND i.inhparent = 'audit_events'::regclass) AS attached,
       GREATEST(c.reltuples, 0)::bigint AS rows_estimate,
       pg_total_relation_size(c.oid) AS size_bytes,
       NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND NOT x.indisvalid)
         AND (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid)
             >= (SELECT count(*) FROM pg_index x WHERE x.indrelid = 'audit_events'::regclass)
         AS indexes_ok,
       EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid
               AND i.inhparent = 'audit_events'::regclass AND i.inhdetachpending)
         AS detach_pending
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname ~ '^audit_events_[0-9]{4}_[0-9]{2}$'
 ORDER BY c.relname
"""


def list_partitions(conn: Connection) -> list[PartitionInfo]:
    result = []
    for name, attached, rows, size, indexes_ok, pending in conn.execute(_LIST_SQL).fetchall():
        month = month_from_name(name)
        if month is not None:
            result.append(PartitionInfo(name, month, attached, rows, size, indexes_ok, pending))
    return result


# ---- maintenance (the operator's loop and `datastorage partitions ensure`) ------------------

# Session-level advisory lock: one maintenance pass at a time across every replica.
MAINTENANCE_LOCK = 0x64617461_0002


async def try_maintenance_lock(conn: AsyncConnection) -> bool:
    """Take the maintenance lock for this session without waiting; False if another has it."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (MAINTENANCE_LOCK,))
    (acquired,) = await cur.fetchone()
    return bool(acquired)


async def release_maintenance_lock(conn: AsyncConnection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (MAINTENANCE_LOCK,))


def retention_cutoff(retention_months: int, now: dt.datetime | None = None) -> dt.date:
    """The oldest month that is kept: months before it are retired."""
    return add_months(current_month(now), -retention_months)


@dataclass(frozen=True)
class PartitionState:
    name: str
    month: dt.date
    attached: bool
    detach_pending: bool


@dataclass(frozen=True)
class PartitionSummary:
    attached: int
    detached: int
    months_ahead: int  # consecutive attached months right after the current one
    current_attached: bool


_STATES_SQL = """
SELECT c.relname, i.inhrelid IS NOT NULL AS attached, COALESCE(i.inhdetachpending, false)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'audit_events'::regclass
 WHERE n.nspname = current_schema() AND c.relkind = 'r'
   AND c.relname ~ '^audit_events_[0-9]{4}_[0-9]{2}$'
 ORDER BY c.relname
"""


async def partition_states(conn: AsyncConnection) -> list[PartitionState]:
    """Every table named like a month partition, attached or not (catalog only, no scans)."""
    states = []
    for name, attached, pending in await (await conn.execute(_STATES_SQL)).fetchall():
        month = month_from_name(name)
        if month is not None:
            states.append(PartitionState(name, month, attached, pending))
    return states


def summarize(states: list[PartitionState], now: dt.datetime | None = None) -> PartitionSummary:
    """Counts for the partition metrics. A pending detach counts as detached: it is leaving."""
    attached_months = {s.month for s in states if s.attached and not s.detach_pending}
    current = current_month(now)
    ahead = 0
    while add_months(current, ahead + 1) in attached_months:
        ahead += 1
    return PartitionSummary(
        attached=len(attached_months),
        detached=len(states) - len(attached_months),
        months_ahead=ahead,
        current_attached=current in attached_months,
    )


@asynccontextmanager
async def _session_lock_timeout(conn: AsyncConnection, seconds: float) -> AsyncIterator[None]:
    """lock_timeout for the statements of the block (autocommit: no SET LOCAL possible)."""
    await conn.execute(
        sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{max(int(seconds * 1000), 1)}ms"))
    )
    try:
        yield
    finally:
        if not conn.closed:
            await conn.execute("RESET lock_timeout")


def _create_standalone_sql(month: dt.date) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)"
    ).format(sql.Identifier(partition_name(month)), sql.Identifier(PARENT))


async def ensure_month_online(
    conn: AsyncConnection, month: dt.date, lock_timeout: float
) -> str | None:
    """Create (or re-attach) the month without blocking writes to the other months.

    `CREATE TABLE ... PARTITION OF` holds ACCESS EXCLUSIVE on audit_events while it waits for
    its other locks, which stalls every insert for up to `lock_timeout`. Creating a plain table
    and then `ATTACH PARTITION` needs only SHARE UPDATE EXCLUSIVE on audit_events (it does not
    conflict with inserts or reads); the attach builds the partition's indexes from the
    parent's. Returns 'created', 'attached' or None (nothing to do).
    """
    async with conn.transaction():
        await conn.execute(_lock_timeout_sql(lock_timeout))
        row = await (await conn.execute(_STATE_SQL, (partition_name(month),))).fetchone()
        if row is not None and row[1]:
            return None
        if row is None:
            await conn.execute(_create_standalone_sql(month))
        await conn.execute(_attach_sql(month))
    return "created" if row is None else "attached"


async def ensure_month(conn: AsyncConnection, month: dt.date, lock_timeout: float) -> str | None:
    """`ensure_month_online`, safe against a concurrent creator (the write path)."""
    for attempt in (1, 2):
        try:
            return await ensure_month_online(conn, month, lock_timeout)
        except (
            errors.UniqueViolation,
            errors.DuplicateTable,
            errors.DuplicateObject,
            errors.WrongObjectType,
        ):
            # Another session created or attached the same table between our check and our
            # DDL: look again (it is there now). Which error the loser sees depends on where
            # the two CREATE TABLEs meet: the table's name, or its row type's ("type ... already
            # exists", DuplicateObject).
            if attempt == 2:
                raise
    return None


async def attach_month(conn: AsyncConnection, month: dt.date, lock_timeout: float) -> None:
    """Re-attach a detached table of that month. ATTACH takes only SHARE UPDATE EXCLUSIVE on
    the parent (writes continue) and validates the rows against the month's range."""
    async with _session_lock_timeout(conn, lock_timeout):
        await conn.execute(_attach_sql(month))


async def finalize_detach(conn: AsyncConnection, month: dt.date, lock_timeout: float) -> None:
    """Complete a `DETACH ... CONCURRENTLY` that was interrupted (state: detach pending)."""
    async with _session_lock_timeout(conn, lock_timeout):
        await conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(
                sql.Identifier(PARENT), sql.Identifier(partition_name(month))
            )
        )


async def detach_month_concurrently(
    conn: AsyncConnection, month: dt.date, lock_timeout: float
) -> None:
    """Detach without blocking writes to the other months. Must run outside a transaction."""
    if conn.info.transaction_status != 0:  # pq.TransactionStatus.IDLE
        raise RuntimeError("DETACH PARTITION CONCURRENTLY needs an idle autocommit connection")
    async with _session_lock_timeout(conn, lock_timeout):
        await conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
                sql.Identifier(PARENT), sql.Identifier(partition_name(month))
            )
        )


async def drop_detached_month(conn: AsyncConnection, month: dt.date, lock_timeout: float) -> bool:
    """Drop the month's table if it exists and is no longer attached. Returns True if dropped;
    refuses (False) while the table is still a partition, so a retirement never drops data
    that queries could see."""
    name = partition_name(month)
    async with conn.transaction():
        await conn.execute(_lock_timeout_sql(lock_timeout))
        row = await (await conn.execute(_STATE_SQL, (name,))).fetchone()
        if row is None or row[1]:
            return False
        await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    return True


async def ensure_window(settings: Settings) -> None:
    """Create this month and the next `partition_premake` on a connection of its own: at
    start-up the pool is still opening, and an outage must cost seconds, not the pool timeout."""
    async with await connect_async(settings, "datastorage", connect_timeout=3) as conn:
        for month in window(settings.partition_premake):
            await ensure_month(conn, month, settings.partition_lock_timeout)
