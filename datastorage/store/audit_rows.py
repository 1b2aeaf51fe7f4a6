"""The audit_events row: its columns, how an event becomes a row, how a row becomes an event.

One column list (table order, with the API name of each column) drives every statement that
reads or writes audit_events, so the identifiers composed into SQL come only from here. Events
arrive already normalised by `domain.events.normalize_event` (API field names, every key set).
Also here: reading stored events by id and parents' dates, which writes and reads share.
"""

from __future__ import annotations

import datetime as dt
import operator
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from datastorage.domain.events import format_timestamp

# (column, API name) in table order (recorded_by, added later, is last but created_at).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "event_id"),
    ("event_version", "version"),
    ("event_timestamp", "event_timestamp"),
    ("event_date", "event_date"),
    ("event_type", "event_type"),
    ("event_category", "event_category"),
    ("event_action", "event_action"),
    ("event_outcome", "event_outcome"),
    ("actor_type", "actor_type"),
    ("actor_id", "actor_id"),
    ("resource_type", "resource_type"),
    ("resource_id", "resource_id"),
    ("correlation_id", "correlation_id"),
    ("parent_event_id", "parent_event_id"),
    ("parent_event_date", "parent_event_date"),
    ("namespace", "namespace"),
    ("cluster_name", "cluster_name"),
    ("severity", "severity"),
    ("duration_ms", "duration_ms"),
    ("error_code", "error_code"),
    ("error_message", "error_message"),
    ("trace_id", "trace_id"),
    ("span_id", "span_id"),
    ("event_data", "event_data"),
    ("retention_days", "retention_days"),
    ("is_sensitive", "is_sensitive"),
    ("recorded_by", "recorded_by"),
)
# Every column GET returns: COLUMNS and created_at. Every write sets created_at itself (the time
# the storing process ran the statement, `stamp`) rather than leaving it to the column's default,
# so the writer knows the whole stored event and can compute its leaf for the tamper-evident log.
STORED_COLUMNS: tuple[tuple[str, str], ...] = (*COLUMNS, ("created_at", "created_at"))
# Those columns as an SQL list: what reads select and what writes insert.
STORED_LIST = sql.SQL(", ").join(sql.Identifier(c) for c, _ in STORED_COLUMNS)

_SELECT_BY_IDS = sql.SQL("SELECT {cols} FROM audit_events WHERE event_id = ANY(%s)").format(
    cols=STORED_LIST
)
_PARENT_DATES = "SELECT event_id, event_date FROM audit_events WHERE event_id = ANY(%s)"

_API_NAMES = operator.itemgetter(*(name for _, name in STORED_COLUMNS))
# The fields of an event as GET returns it: what a stamped event about to be stored holds.
STORED_NAMES = frozenset(name for _, name in STORED_COLUMNS)
_EVENT_DATA_INDEX = [column for column, _ in COLUMNS].index("event_data")


def created_at_now() -> str:
    """The created_at of the events one statement is about to store (they share the moment, as
    rows of one transaction share now())."""
    return format_timestamp(dt.datetime.now(dt.UTC))


def stamp(events: Iterable[dict[str, Any]]) -> None:
    """Set created_at on events about to be stored by one statement."""
    created_at = created_at_now()
    for event in events:
        event["created_at"] = created_at


def row_values(event: Mapping[str, Any]) -> list[Any]:
    """The parameters of one INSERT row of a stamped event, in column order."""
    return [
        Jsonb(event.get(name)) if column == "event_data" else event.get(name)
        for column, name in STORED_COLUMNS
    ]


def copy_row(event: Mapping[str, Any]) -> list[Any]:
    """One COPY row of a stamped event (events carry every key: normalize_event sets them all)."""
    row = list(_API_NAMES(event))
    row[_EVENT_DATA_INDEX] = orjson.dumps(row[_EVENT_DATA_INDEX]).decode()
    return row


def json_rows(events: Sequence[Mapping[str, Any]]) -> str:
    """Stamped events as one JSON array of records keyed by column, for
    jsonb_populate_recordset."""
    return orjson.dumps(
        [{column: e.get(name) for column, name in STORED_COLUMNS} for e in events]
    ).decode()


def row_to_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the API shows it: every column, with its stored value."""
    event: dict[str, Any] = {}
    for column, name in STORED_COLUMNS:
        value = row[column]
        if isinstance(value, dt.datetime):
            value = format_timestamp(value)
        elif isinstance(value, dt.date):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        event[name] = value
    return event


async def fetch_by_ids(conn: AsyncConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Stored events by event_id (ids not stored are absent)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SELECT_BY_IDS, (ids,))
    return {str(row["event_id"]): row_to_event(row) for row in await cur.fetchall()}


async def parent_dates(conn: AsyncConnection, ids: list[str]) -> dict[str, str]:
    """event_date of the stored events among `ids`."""
    cur = await conn.execute(_PARENT_DATES, (ids,))
    return {str(pid): pdate.isoformat() for pid, pdate in await cur.fetchall()}
