"""SQL of the audit_events table: idempotent inserts, batch COPY, replay, queries.

Events arrive here already normalised by `domain.events.normalize_event` (API field names).
Every statement is parameterised; the only identifiers composed into SQL come from the fixed
column lists of this module.
"""

from __future__ import annotations

import base64
import datetime as dt
import operator
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from datastorage.domain.events import format_timestamp, same_content
from datastorage.store import partitions
from datastorage.store.errors import Conflict, is_missing_partition

# (column, API name) in table order.
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
)
_COLUMN_NAMES = [column for column, _ in COLUMNS]
_SELECT_LIST = sql.SQL(", ").join(
    [sql.Identifier(c) for c in _COLUMN_NAMES] + [sql.Identifier("created_at")]
)
_INSERT_COLUMNS = sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMN_NAMES)

_INSERT = sql.SQL(
    "INSERT INTO audit_events ({cols}) VALUES ({vals}) "
    "ON CONFLICT (event_id, event_date) DO NOTHING RETURNING created_at"
).format(cols=_INSERT_COLUMNS, vals=sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))
_SELECT_BY_IDS = sql.SQL("SELECT {cols} FROM audit_events WHERE event_id = ANY(%s)").format(
    cols=_SELECT_LIST
)
_PARENT_DATES = "SELECT event_id, event_date FROM audit_events WHERE event_id = ANY(%s)"
_COPY = sql.SQL("COPY audit_events ({cols}) FROM STDIN").format(cols=_INSERT_COLUMNS)
_REPLAY_TEMP = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS replay_events "
    "(LIKE audit_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY_REPLAY = sql.SQL("COPY replay_events ({cols}) FROM STDIN").format(cols=_INSERT_COLUMNS)
_REPLAY_MERGE = sql.SQL(
    "INSERT INTO audit_events ({cols}) SELECT {cols} FROM replay_events "
    "ORDER BY event_timestamp ON CONFLICT (event_id, event_date) DO NOTHING"
).format(cols=_INSERT_COLUMNS)


class UnknownParent(ValueError):
    """parent_event_id names no stored event; `indexes` are the batch positions affected."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__("parent_event_id names no stored event")
        self.indexes = indexes


def _row_values(event: Mapping[str, Any]) -> list[Any]:
    values = []
    for column, name in COLUMNS:
        value = event.get(name)
        if column == "event_data":
            value = Jsonb(value)
        values.append(value)
    return values


_API_NAMES = operator.itemgetter(*(name for _, name in COLUMNS))
_EVENT_DATA_INDEX = [column for column, _ in COLUMNS].index("event_data")


def _copy_row(event: Mapping[str, Any]) -> list[Any]:
    """One COPY row (events carry every key: normalize_event sets them all)."""
    row = list(_API_NAMES(event))
    row[_EVENT_DATA_INDEX] = orjson.dumps(row[_EVENT_DATA_INDEX]).decode()
    return row


def row_to_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the API shows it: every column, with its stored value."""
    event: dict[str, Any] = {}
    for column, name in (*COLUMNS, ("created_at", "created_at")):
        value = row[column]
        if isinstance(value, dt.datetime):
            value = format_timestamp(value)
        elif isinstance(value, dt.date):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        event[name] = value
    return event


async def _fetch_by_ids(conn: AsyncConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SELECT_BY_IDS, (ids,))
    return {str(row["event_id"]): row_to_event(row) for row in await cur.fetchall()}


async def _attach_parent_dates(
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
    stored: dict[str, str] = {}
    if wanted:
        cur = await conn.execute(_PARENT_DATES, (wanted,))
        stored = {str(pid): pdate.isoformat() for pid, pdate in await cur.fetchall()}
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


async def _with_partitions(
    conn: AsyncConnection,
    events: Sequence[Mapping[str, Any]],
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


async def insert_event(
    conn: AsyncConnection,
    event: dict[str, Any],
    *,
    client_id: bool,
    lock_timeout: float,
    on_partition_created: Any = None,
) -> WriteResult:
    """Store one event. A resend of a stored event_id returns the stored one (created=False),
    or raises Conflict when the content differs."""
    if event.get("parent_event_id"):
        await _attach_parent_dates(conn, [event])
    if client_id:
        existing = (await _fetch_by_ids(conn, [event["event_id"]])).get(event["event_id"])
        if existing is not None:
            return _resend(existing, event)

    async def insert() -> Any:
        cur = await conn.execute(_INSERT, _row_values(event), prepare=True)
        return await cur.fetchone()

    row = await _with_partitions(conn, [event], lock_timeout, on_partition_created, insert)
    if row is None:  # same (event_id, event_date) committed concurrently
        existing = (await _fetch_by_ids(conn, [event["event_id"]]))[event["event_id"]]
        return _resend(existing, event)
    return WriteResult(True, event)


def _resend(existing: dict[str, Any], event: dict[str, Any]) -> WriteResult:
    if not same_content(existing, event):
        raise Conflict(f"event_id {event['event_id']} is already stored with different content")
    return WriteResult(False, existing)


# ---- group commit ---------------------------------------------------------------------------
# Concurrent single-event writes are stored together: one statement (rows passed as one text
# array per column) and one commit for the whole group. Each caller still learns its own fate.

# The rows travel as one JSON array (a single parameter, serialized by orjson in C) that
# PostgreSQL turns into audit_events records; per-parameter adaptation in Python was the
# largest client cost of this statement.
_INSERT_GROUP = (
    "INSERT INTO audit_events ({cols}) SELECT {cols} "
    "FROM jsonb_populate_recordset(NULL::audit_events, %s::jsonb) "
    "ON CONFLICT (event_id, event_date) DO NOTHING RETURNING event_id::text"
).format(cols=", ".join(_COLUMN_NAMES))


def _group_rows(events: Sequence[Mapping[str, Any]]) -> str:
    return orjson.dumps(
        [{column: e.get(name) for column, name in COLUMNS} for e in events]
    ).decode()


async def insert_group(
    conn: AsyncConnection, items: Sequence[tuple[dict[str, Any], bool]]
) -> list[WriteResult | Exception]:
    """Store (event, client_chose_id) pairs in one transaction. Per item: a WriteResult
    (created, or an identical resend) or the exception that item alone must raise (Conflict,
    UnknownParent). Failures of the statement itself (database down, missing partition)
    propagate for the caller to handle for the whole group."""
    results: list[WriteResult | Exception | None] = [None] * len(items)
    async with conn.transaction():
        parents = [e["parent_event_id"] for e, _ in items if e.get("parent_event_id")]
        if parents:
            cur = await conn.execute(_PARENT_DATES, (parents,))
            dates = {str(pid): pdate.isoformat() for pid, pdate in await cur.fetchall()}
            for index, (event, _) in enumerate(items):
                parent = event.get("parent_event_id")
                if parent:
                    event["parent_event_date"] = dates.get(parent)
                    if parent not in dates:
                        results[index] = UnknownParent([0])
        chosen = [e["event_id"] for i, (e, c) in enumerate(items) if c and results[i] is None]
        existing = await _fetch_by_ids(conn, chosen) if chosen else {}
        for index, (event, _) in enumerate(items):
            if results[index] is None and event["event_id"] in existing:
                results[index] = _resend_result(existing[event["event_id"]], event)
        pending = [i for i, r in enumerate(results) if r is None]
        if pending:
            cur = await conn.execute(
                _INSERT_GROUP, (_group_rows([items[i][0] for i in pending]),), prepare=True
            )
            inserted = {row[0] for row in await cur.fetchall()}
            raced = []
            for index in pending:
                event_id = items[index][0]["event_id"]
                if event_id in inserted:
                    inserted.discard(event_id)  # a second item with this id is a resend
                    results[index] = WriteResult(True, items[index][0])
                else:
                    raced.append(index)
            if raced:
                stored = await _fetch_by_ids(conn, [items[i][0]["event_id"] for i in raced])
                for index in raced:
                    event = items[index][0]
                    results[index] = _resend_result(stored[event["event_id"]], event)
    return results  # type: ignore[return-value]


def _resend_result(existing: dict[str, Any], event: dict[str, Any]) -> WriteResult | Exception:
    try:
        return _resend(existing, event)
    except Conflict as exc:
        return exc


async def ensure_partitions(
    conn: AsyncConnection, events: Iterable[Mapping[str, Any]], lock_timeout: float
) -> tuple[list[str], dict[dt.date, Exception]]:
    """Create the months these events need. Returns (partitions created, month -> failure):
    a month that cannot be created fails only its own events."""
    created: list[str] = []
    failed: dict[dt.date, Exception] = {}
    months = {partitions.month_of(dt.date.fromisoformat(e["event_date"])) for e in events}
    for month in sorted(months):
        try:
            if await partitions.ensure_month(conn, month, lock_timeout):
                created.append(partitions.partition_name(month))
        except Exception as exc:  # noqa: BLE001 — returned to the caller, per month
            failed[month] = exc
    return created, failed


def month_of_event(event: Mapping[str, Any]) -> dt.date:
    return partitions.month_of(dt.date.fromisoformat(event["event_date"]))


async def insert_batch(
    conn: AsyncConnection,
    events: list[dict[str, Any]],
    *,
    client_ids: Collection[str],
    lock_timeout: float,
    on_partition_created: Any = None,
) -> tuple[int, list[int]]:
    """Store a batch atomically with COPY. Items whose client-chosen event_id is already stored
    with the same content are skipped (idempotent resend); ids the server generated cannot be
    stored yet. Returns (rows inserted, indexes in conflict)."""
    async with conn.transaction():
        await _attach_parent_dates(conn, events)
        chosen = [e["event_id"] for e in events if e["event_id"] in client_ids]
        existing = await _fetch_by_ids(conn, chosen) if chosen else {}
        conflicts = [
            i
            for i, e in enumerate(events)
            if e["event_id"] in existing and not same_content(existing[e["event_id"]], e)
        ]
        if conflicts:
            return 0, conflicts
        fresh = [e for e in events if e["event_id"] not in existing]
        if fresh:
            await _copy_with_partitions(conn, fresh, lock_timeout, on_partition_created)
        return len(fresh), []


async def copy_events(
    conn: AsyncConnection,
    events: Iterable[Mapping[str, Any]],
    *,
    complete: Callable[[], Any],
    lock_timeout: float,
    on_partition_created: Any = None,
) -> None:
    """Store, with one COPY, events that name no parent and no client-chosen id, writing each
    row as the iterable yields it: the caller may still be producing them, and PostgreSQL
    works on the first rows meanwhile. `complete()` runs after the last row, before the
    commit; if it raises, nothing is stored. On a missing partition the iterable is read
    again (it must replay what it yielded)."""

    async def copy_rows() -> None:
        async with conn.cursor().copy(_COPY) as copy:
            for event in events:
                await copy.write_row(_copy_row(event))
            complete()

    await _with_partitions(conn, events, lock_timeout, on_partition_created, copy_rows)


async def _copy_with_partitions(
    conn: AsyncConnection,
    events: list[dict[str, Any]],
    lock_timeout: float,
    on_partition_created: Any,
) -> None:
    async def copy_rows() -> None:
        async with conn.cursor().copy(_COPY) as copy:
            for event in events:
                await copy.write_row(_copy_row(event))

    await _with_partitions(conn, events, lock_timeout, on_partition_created, copy_rows)


async def replay_events(
    conn: AsyncConnection,
    events: list[dict[str, Any]],
    *,
    lock_timeout: float,
    on_partition_created: Any = None,
) -> None:
    """Idempotent bulk insert for DLQ replay, one transaction. Fast path: COPY straight into
    audit_events. A record that is already stored (replayed again after a crash between commit
    and acknowledgement) makes that COPY fail as a whole; the batch then goes through a temp
    table and INSERT ... ON CONFLICT DO NOTHING keyed by (event_id, event_date)."""
    async with conn.transaction():
        await _attach_parent_dates(conn, events, strict=False)
        try:
            await _copy_with_partitions(conn, events, lock_timeout, on_partition_created)
            return
        except errors.UniqueViolation:
            pass
        await conn.execute(_REPLAY_TEMP)
        async with conn.cursor().copy(_COPY_REPLAY) as copy:
            for event in events:
                await copy.write_row(_copy_row(event))
        await _with_partitions(
            conn, events, lock_timeout, on_partition_created, lambda: conn.execute(_REPLAY_MERGE)
        )


async def get_event(conn: AsyncConnection, event_id: str) -> dict[str, Any] | None:
    return (await _fetch_by_ids(conn, [event_id])).get(event_id)


# ---- queries -------------------------------------------------------------------------------

EQUALITY_FILTERS = (
    "correlation_id",
    "event_type",
    "event_category",
    "event_action",
    "event_outcome",
    "severity",
    "actor_type",
    "actor_id",
    "resource_type",
    "resource_id",
    "namespace",
    "cluster_name",
    "parent_event_id",
)


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class EventQuery:
    filters: Mapping[str, Any]
    since: dt.datetime | None
    until: dt.datetime | None
    event_data: Mapping[str, Any] | None
    descending: bool
    limit: int
    offset: int | None
    cursor: str | None
    count_limit: int


@dataclass
class EventPage:
    events: list[dict[str, Any]]
    total: int
    total_capped: bool
    has_more: bool
    next_cursor: str | None


def encode_cursor(timestamp: dt.datetime, event_id: str, descending: bool) -> str:
    payload = orjson.dumps(
        {"t": timestamp.isoformat(), "i": event_id, "d": "desc" if descending else "asc"}
    )
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(token: str, descending: bool) -> tuple[dt.datetime, uuid.UUID]:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        timestamp = dt.datetime.fromisoformat(payload["t"])
        event_id = uuid.UUID(payload["i"])
        direction = payload["d"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadCursor("cursor is not a token this service issued") from exc
    if timestamp.tzinfo is None or direction != ("desc" if descending else "asc"):
        raise BadCursor("cursor belongs to a query with a different order")
    return timestamp, event_id


def _where(query: EventQuery) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for name in EQUALITY_FILTERS:
        value = query.filters.get(name)
        if value is not None:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
            params.append(value)
    if query.since is not None:
        clauses.append(sql.SQL("event_timestamp >= %s AND event_date >= %s"))
        params += [query.since, query.since.astimezone(dt.UTC).date()]
    if query.until is not None:
        clauses.append(sql.SQL("event_timestamp <= %s AND event_date <= %s"))
        params += [query.until, query.until.astimezone(dt.UTC).date()]
    if query.event_data is not None:
        clauses.append(sql.SQL("event_data @> %s"))
        params.append(Jsonb(query.event_data))
    where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("TRUE")
    return where, params


# An event_data containment matching at most this many rows is paged from its matches, found
# through the GIN index. Otherwise PostgreSQL picks the plan, and for `@>` it estimates the
# share of matching rows from a sample: a probe matching 0.1 % of the rows was planned some
# runs as a walk down the time index filtering every row (30 ms at 1M rows, not 8).
GIN_FIRST_MAX_MATCHES = 5000


async def query_events(conn: AsyncConnection, query: EventQuery) -> EventPage:
    """One page plus a capped total, both read in the same snapshot."""
    where, params = _where(query)
    page_where, page_params = where, list(params)
    if query.cursor:
        timestamp, event_id = decode_cursor(query.cursor, query.descending)
        op = sql.SQL("<") if query.descending else sql.SQL(">")
        page_where = sql.SQL("{} AND (event_timestamp, event_id) {} (%s, %s)").format(where, op)
        page_params += [timestamp, event_id]
    direction = sql.SQL("DESC") if query.descending else sql.SQL("ASC")
    page_sql = sql.SQL(
        "SELECT {cols} FROM audit_events WHERE {where} "
        "ORDER BY event_timestamp {dir}, event_id {dir} LIMIT %s OFFSET %s"
    ).format(cols=_SELECT_LIST, where=page_where, dir=direction)
    gin_first_sql = sql.SQL(
        "WITH matches AS MATERIALIZED (SELECT {cols} FROM audit_events WHERE {where}) "
        "SELECT * FROM matches "
        "ORDER BY event_timestamp {dir}, event_id {dir} LIMIT %s OFFSET %s"
    ).format(cols=_SELECT_LIST, where=page_where, dir=direction)
    count_sql = sql.SQL(
        "SELECT count(*) FROM (SELECT 1 FROM audit_events WHERE {where} LIMIT %s) AS capped"
    ).format(where=where)
    offset = 0 if query.cursor else (query.offset or 0)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        count_cur = await conn.execute(count_sql, [*params, query.count_limit + 1])
        (counted,) = await count_cur.fetchone()
        few_matches = query.event_data is not None and counted <= min(
            GIN_FIRST_MAX_MATCHES, query.count_limit
        )
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            gin_first_sql if few_matches else page_sql, [*page_params, query.limit + 1, offset]
        )
        rows = await cur.fetchall()
    has_more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = None
    if has_more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(
            last["event_timestamp"], str(last["event_id"]), query.descending
        )
    return EventPage(
        events=[row_to_event(r) for r in rows],
        total=min(counted, query.count_limit),
        total_capped=counted > query.count_limit,
        has_more=has_more,
        next_cursor=next_cursor,
    )
