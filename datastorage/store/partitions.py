"""Monthly partitions of audit_events: naming, creation, inspection (SPEC §4).

Every partition covers one UTC calendar month and is named `audit_events_YYYY_MM`. Creation is
idempotent and also re-attaches a same-named table that was detached. The functions take an
open psycopg connection (sync or async variants) so migrations, the write path and the operator
share one definition of the DDL.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from psycopg import AsyncConnection, Connection, sql

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


async def ensure_month_partition_async(
    conn: AsyncConnection, month: dt.date, lock_timeout: float
) -> str | None:
    """The write path's variant: a short lock_timeout so a blocked DDL fails fast (-> DLQ)."""
    async with conn.transaction():
        await conn.execute(_lock_timeout_sql(lock_timeout))
        row = await (await conn.execute(_STATE_SQL, (partition_name(month),))).fetchone()
        if row is None:
            await conn.execute(_create_sql(month))
            return "created"
        if not row[1]:
            await conn.execute(_attach_sql(month))
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


_LIST_SQL = """
SELECT c.relname,
       EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid
               AND i.inhparent = 'audit_events'::regclass) AS attached,
       GREATEST(c.reltuples, 0)::bigint AS rows_estimate,
       pg_total_relation_size(c.oid) AS size_bytes,
       NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND NOT x.indisvalid)
         AND (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid)
             >= (SELECT count(*) FROM pg_index x WHERE x.indrelid = 'audit_events'::regclass)
         AS indexes_ok
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname ~ '^audit_events_[0-9]{4}_[0-9]{2}$'
 ORDER BY c.relname
"""


def list_partitions(conn: Connection) -> list[PartitionInfo]:
    result = []
    for name, attached, rows, size, indexes_ok in conn.execute(_LIST_SQL).fetchall():
        month = month_from_name(name)
        if month is not None:
            result.append(PartitionInfo(name, month, attached, rows, size, indexes_ok))
    return result
