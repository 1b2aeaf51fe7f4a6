"""SQL of the remediation_workflow_catalog table: versions, latest flag, lists, search candidates.

Rows come back as dicts keyed by column name with native values (UUID, datetime, Decimal);
`row_to_api` turns one into the API's JSON shape. Every statement is parameterised; the only
identifiers composed into SQL come from the fixed column tuples of this module, never from a
request.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from datastorage.domain.events import format_timestamp
from datastorage.domain.lifecycle import MUTABLE_FIELDS
from datastorage.store.errors import Conflict

TABLE = sql.Identifier("remediation_workflow_catalog")

# Every column the API shows, in the order a response lists them.
API_COLUMNS: tuple[str, ...] = (
    "workflow_id",
    "workflow_name",
    "version",
    "name",
    "description",
    "content",
    "content_hash",
    "labels",
    "custom_labels",
    "detected_labels",
    "parameters",
    "execution_engine",
    "container_image",
    "container_digest",
    "owner",
    "maintainer",
    "status",
    "status_reason",
    "disabled_at",
    "disabled_by",
    "disabled_reason",
    "deprecation_notice",
    "approved_by",
    "approved_at",
    "version_notes",
    "is_latest_version",
    "total_executions",
    "successful_executions",
    "success_rate",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
)
# What a create may set; the rest is server-maintained (id, latest flag, counters, stamps).
_SERVER_MAINTAINED = frozenset(
    {
        "workflow_id",
        "is_latest_version",
        "total_executions",
        "successful_executions",
        "success_rate",
        "created_at",
        "updated_at",
    }
)
INSERT_COLUMNS: tuple[str, ...] = tuple(c for c in API_COLUMNS if c not in _SERVER_MAINTAINED)
# What an update may set: the PATCH-able fields plus the disable stamp they imply.
UPDATE_COLUMNS: tuple[str, ...] = tuple(sorted(MUTABLE_FIELDS | {"disabled_at"}))
JSON_COLUMNS = frozenset({"labels", "custom_labels", "detected_labels", "parameters"})
# Equality filters of the list endpoint; the label ones are the generated columns.
LIST_FILTERS: tuple[str, ...] = (
    "status",
    "workflow_name",
    "signal_type",
    "severity",
    "component",
    "environment",
    "priority",
)
WILDCARD = "*"

# Lock space of the per-name advisory lock (two-int form, so it cannot collide with the
# migration runner's single-bigint lock).
_NAME_LOCK_SPACE = 0x7766  # "wf"


class _Now:
    """Marker for "the transaction's now()" in an update, so stamps agree with updated_at."""

    def __repr__(self) -> str:
        return "NOW"


NOW = _Now()

_SELECT_LIST = sql.SQL(", ").join(
    [sql.Identifier(c) for c in API_COLUMNS] + [sql.Identifier("creation_order")]
)
_BY_ID = sql.SQL("SELECT {cols} FROM {table} WHERE workflow_id = %s").format(
    cols=_SELECT_LIST, table=TABLE
)
_BY_ID_FOR_UPDATE = sql.SQL("SELECT {cols} FROM {table} WHERE workflow_id = %s FOR UPDATE").format(
    cols=_SELECT_LIST, table=TABLE
)
_BY_NAME_VERSION = sql.SQL(
    "SELECT {cols} FROM {table} WHERE workflow_name = %s AND version = %s"
).format(cols=_SELECT_LIST, table=TABLE)
_BY_NAME = sql.SQL("SELECT {cols} FROM {table} WHERE workflow_name = %s").format(
    cols=_SELECT_LIST, table=TABLE
)
_CLEAR_LATEST = sql.SQL(
    "UPDATE {table} SET is_latest_version = false "
    "WHERE workflow_name = %s AND is_latest_version AND workflow_id <> %s"
).format(table=TABLE)
_SET_LATEST = sql.SQL(
    "UPDATE {table} SET is_latest_version = true WHERE workflow_id = %s AND NOT is_latest_version"
).format(table=TABLE)
_SEARCH = sql.SQL(
    "SELECT {cols} FROM {table} "
    "WHERE is_latest_version AND signal_type = %s AND severity = %s AND status = ANY(%s) "
    "AND component = ANY(%s) AND environment = ANY(%s) AND priority = ANY(%s)"
).format(cols=_SELECT_LIST, table=TABLE)


def _to_api_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def row_to_api(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the API shows it (internal columns dropped, JSON-ready values)."""
    return {column: _to_api_value(row[column]) for column in API_COLUMNS}


def _param(column: str, value: Any) -> Any:
    return Jsonb(value) if column in JSON_COLUMNS and value is not None else value


async def lock_name(conn: AsyncConnection, workflow_name: str) -> None:
    """Serialise writers of one workflow name until the transaction ends.

    Concurrent creates of versions of one name must agree on which one is latest; the lock
    makes "insert, then recompute latest over all versions" atomic per name.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_NAME_LOCK_SPACE, workflow_name)
    )


async def insert_workflow(conn: AsyncConnection, record: Mapping[str, Any]) -> uuid.UUID:
    """Insert one version (values may be NOW); Conflict when (workflow_name, version) exists."""
    values: list[sql.Composable] = []
    params: list[Any] = []
    for column in INSERT_COLUMNS:
        value = record.get(column)
        if value is NOW:
            values.append(sql.SQL("now()"))
        else:
            values.append(sql.Placeholder())
            params.append(_param(column, value))
    query = sql.SQL("INSERT INTO {table} ({cols}) VALUES ({vals}) RETURNING workflow_id").format(
        table=TABLE,
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in INSERT_COLUMNS),
        vals=sql.SQL(", ").join(values),
    )
    try:
        async with conn.transaction():  # savepoint: the caller's transaction stays usable
            cur = await conn.execute(query, params)
            (workflow_id,) = await cur.fetchone()
    except errors.UniqueViolation as exc:
        raise Conflict(
            f"workflow {record['workflow_name']!r} version {record['version']!r} already exists"
        ) from exc
    return workflow_id


async def _fetch_one(conn: AsyncConnection, query: sql.Composable, params: Sequence[Any]):
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return await cur.fetchone()


async def _fetch_all(conn: AsyncConnection, query: sql.Composable, params: Sequence[Any]):
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return await cur.fetchall()


async def get_workflow(
    conn: AsyncConnection, workflow_id: uuid.UUID, *, for_update: bool = False
) -> dict[str, Any] | None:
    return await _fetch_one(conn, _BY_ID_FOR_UPDATE if for_update else _BY_ID, (workflow_id,))


async def find_version(
    conn: AsyncConnection, workflow_name: str, version: str
) -> dict[str, Any] | None:
    return await _fetch_one(conn, _BY_NAME_VERSION, (workflow_name, version))


async def versions_of(conn: AsyncConnection, workflow_name: str) -> list[dict[str, Any]]:
    """Every version of a name, unordered (ordering is a domain rule, see lifecycle)."""
    return await _fetch_all(conn, _BY_NAME, (workflow_name,))


async def set_latest(conn: AsyncConnection, workflow_name: str, workflow_id: uuid.UUID) -> None:
    """Make `workflow_id` the only latest version of its name.

    Two statements, clear then set, because the one-latest unique index is checked row by
    row: a single UPDATE flipping both rows could see two latest rows midway.
    """
    await conn.execute(_CLEAR_LATEST, (workflow_name, workflow_id))
    await conn.execute(_SET_LATEST, (workflow_id,))


async def update_workflow(
    conn: AsyncConnection, workflow_id: uuid.UUID, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Apply `changes` (keys from UPDATE_COLUMNS; a value may be NOW) and bump updated_at."""
    unknown = set(changes) - set(UPDATE_COLUMNS)
    if unknown:
        raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
    assignments: list[sql.Composable] = []
    params: list[Any] = []
    for column in UPDATE_COLUMNS:
        if column not in changes:
            continue
        value = changes[column]
        if value is NOW:
            assignments.append(sql.SQL("{} = now()").format(sql.Identifier(column)))
        else:
            assignments.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    assignments.append(sql.SQL("updated_at = now()"))
    query = sql.SQL("UPDATE {table} SET {sets} WHERE workflow_id = %s RETURNING {cols}").format(
        table=TABLE, sets=sql.SQL(", ").join(assignments), cols=_SELECT_LIST
    )
    return await _fetch_one(conn, query, [*params, workflow_id])


async def list_workflows(
    conn: AsyncConnection, filters: Mapping[str, Any], limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A page (newest first) and the total, read in one snapshot."""
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for column in LIST_FILTERS:
        if filters.get(column) is not None:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(filters[column])
    if filters.get("latest_only"):
        clauses.append(sql.SQL("is_latest_version"))
    where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("TRUE")
    page = sql.SQL(
        "SELECT {cols} FROM {table} WHERE {where} "
        "ORDER BY created_at DESC, workflow_id LIMIT %s OFFSET %s"
    ).format(cols=_SELECT_LIST, table=TABLE, where=where)
    count = sql.SQL("SELECT count(*) FROM {table} WHERE {where}").format(table=TABLE, where=where)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        rows = await _fetch_all(conn, page, [*params, limit, offset])
        (total,) = await (await conn.execute(count, params)).fetchone()
    return rows, total


async def search_candidates(
    conn: AsyncConnection, filters: Mapping[str, Any], statuses: Sequence[str]
) -> list[dict[str, Any]]:
    """Latest versions in `statuses` whose mandatory labels match (docs/api.md candidates):
    signal_type and severity equal; component, environment and priority equal or '*'."""
    return await _fetch_all(
        conn,
        _SEARCH,
        (
            filters["signal_type"],
            filters["severity"],
            list(statuses),
            [filters["component"], WILDCARD],
            [filters["environment"], WILDCARD],
            [filters["priority"], WILDCARD],
        ),
    )
