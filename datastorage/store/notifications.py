"""SQL of the notification_audit table.

A record has two keys. `id` in the table is the uuid the server chooses before the first
attempt: a DLQ record carries it, so a replay inserts the record at most once. `seq` is the
int64 the database numbers records with (migration 007), and what the API calls `id`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row

from datastorage.domain.events import format_timestamp
from datastorage.store.errors import Conflict

FIELDS = (
    "remediation_id",
    "notification_id",
    "recipient",
    "channel",
    "message_summary",
    "status",
    "sent_at",
    "delivery_status",
    "error_message",
    "escalation_level",
)
# Set by the server, never read from a request: the authenticated caller (docs/auth.md).
SERVER_FIELDS = ("recorded_by",)
_WRITTEN = ("id", *FIELDS, *SERVER_FIELDS)
_RETURNING = sql.SQL(", ").join(
    [
        sql.SQL("seq AS id"),
        *(sql.Identifier(c) for c in (*FIELDS, *SERVER_FIELDS, "created_at", "updated_at")),
    ]
)
_COLS = sql.SQL(", ").join(sql.Identifier(c) for c in _WRITTEN)
_VALS = sql.SQL(", ").join(sql.Placeholder() * len(_WRITTEN))
_INSERT = sql.SQL("INSERT INTO notification_audit ({cols}) VALUES ({vals}) RETURNING {ret}").format(
    cols=_COLS, vals=_VALS, ret=_RETURNING
)
_REPLAY = sql.SQL(
    "INSERT INTO notification_audit ({cols}) VALUES ({vals}) ON CONFLICT (id) DO NOTHING"
).format(cols=_COLS, vals=_VALS)


def _to_api(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, dt.datetime):
            value = format_timestamp(value)
        out[key] = value
    return out


def _values(record: dict[str, Any]) -> list[Any]:
    """(id, *FIELDS, *SERVER_FIELDS): the uuid is chosen by the server before the first
    attempt; a record queued by an older version has no recorded_by (NULL)."""
    values = [record["id"], *(record.get(f) for f in (*FIELDS, *SERVER_FIELDS))]
    values[1 + FIELDS.index("escalation_level")] = record.get("escalation_level") or 0
    return values


async def insert_notification(conn: AsyncConnection, record: dict[str, Any]) -> dict[str, Any]:
    try:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_INSERT, _values(record))
        return _to_api(await cur.fetchone())
    except errors.UniqueViolation as exc:
        raise Conflict(f"notification_id {record['notification_id']} already exists") from exc


async def replay_notifications(conn: AsyncConnection, records: list[dict[str, Any]]) -> None:
    """Idempotent replay keyed by the server-chosen uuid."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(_REPLAY, [_values(r) for r in records])


async def list_notifications(
    conn: AsyncConnection, filters: dict[str, Any], limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    clauses, params = [], []
    for name in ("remediation_id", "notification_id", "status", "recorded_by"):
        if filters.get(name) is not None:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
            params.append(filters[name])
    where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("TRUE")
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            sql.SQL(
                "SELECT {ret} FROM notification_audit WHERE {where} "
                "ORDER BY created_at DESC, seq LIMIT %s OFFSET %s"
            ).format(ret=_RETURNING, where=where),
            [*params, limit, offset],
        )
        rows = [_to_api(r) for r in await cur.fetchall()]
        count = await conn.execute(
            sql.SQL("SELECT count(*) FROM notification_audit WHERE {where}").format(where=where),
            params,
        )
        (total,) = await count.fetchone()
    return rows, total
